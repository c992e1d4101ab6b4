// The conformance suite's reports: the list, and one report's verdict, per-check table, files and the training
// evidence it names.
import { api, layout, report } from "./api.js";
import { el, fill, statusBadge, time } from "./view.js";

function files(commit, names) {
  return names.map((name) => el("a", { href: `/api/verifications/${encodeURIComponent(commit)}/files/${name}`, class: "button" }, name));
}

function show(target, document, links) {
  const c = document.summary;
  const checks = document.checks.map((check) =>
    el(
      "tr",
      { "data-check": check.id, "data-status": check.status },
      el("td", {}, el("code", {}, check.id)),
      el("td", {}, check.title, check.required ? null : el("span", { class: "muted" }, " (advisory)")),
      el("td", {}, check.requirement),
      el("td", {}, statusBadge(check.status)),
      el(
        "td",
        {},
        [check.failure, check.message].filter(Boolean).join(": "),
        check.evidence.map((path) => [el("br"), el("a", { href: `/api/verifications/${encodeURIComponent(document.commit)}/files/${path}`, class: "mono" }, path)]),
      ),
    ),
  );
  const training = document.training_evidence.map((t) =>
    el(
      "li",
      {},
      el("a", { href: `/runs/${t.run_id}` }, t.run_id),
      " (manifest sha256 ",
      el("code", {}, t.manifest_sha256.slice(0, 16)),
      "…) ",
      el("a", { href: `/api/verifications/${encodeURIComponent(document.commit)}/files/${t.copy}` }, "the manifest as the suite downloaded it"),
    ),
  );
  fill(
    target,
    el("h2", {}, "Report ", el("code", {}, document.commit), " ", statusBadge(document.verdict)),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "target"), el("dd", {}, `${document.target.base_url} (service ${document.target.version ?? "?"})`),
      el("dt", {}, "suite"), el("dd", {}, `${document.suite.name} ${document.suite.version}`),
      el("dt", {}, "finished"), el("dd", {}, `${time(document.finished_at)} (${document.duration_s} s)`),
      el("dt", {}, "checks"), el("dd", {}, `${c.total}: ${c.passed} passed, ${c.failed} failed, ${c.error} errors, ${c.skipped} skipped`),
    ),
    el("div", { class: "toolbar" }, files(document.commit, ["discrepancies.md", ...(links.html ? ["report.html"] : []), "report.json", "junit.xml", "SHA256SUMS"])),
    el("table", { id: "checks" }, el("thead", {}, el("tr", {}, ["id", "title", "requirement", "outcome", "message and evidence"].map((h) => el("th", {}, h)))), el("tbody", {}, checks)),
    el("h2", {}, "Training evidence"),
    el("ul", { id: "training" }, training.length ? training : el("li", { class: "muted" }, "none")),
  );
}

async function main() {
  const mainEl = document.getElementById("main");
  let listing;
  try {
    await layout("verification");
    listing = await api("/api/verifications");
  } catch (error) {
    report(error);
    return;
  }
  const chosen = new URLSearchParams(location.search).get("commit") || listing.reports[0]?.commit;
  const detail = el("section", { id: "report" });
  const rows = listing.reports.map((r) =>
    el(
      "tr",
      { "data-commit": r.commit },
      el("td", {}, el("a", { href: r.links.dashboard }, r.commit)),
      el("td", {}, statusBadge(r.verdict)),
      el("td", {}, r.target.base_url),
      el("td", {}, time(r.finished_at)),
      el("td", { class: "num" }, `${r.summary.passed}/${r.summary.total}`),
    ),
  );
  fill(
    mainEl,
    el("h1", {}, "Verification"),
    el(
      "section",
      { "data-needs-read": "" },
      el("p", { class: "muted" }, "Reports of the conformance suite under evidence/phase1/verify/ (make verify writes one)."),
      el("table", { id: "reports" }, el("thead", {}, el("tr", {}, ["commit", "verdict", "target", "finished", "passed"].map((h) => el("th", {}, h)))), el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No reports yet.")))),
      listing.unreadable.map((u) => el("p", { class: "notice error" }, `${u.commit}: ${u.problem}`)),
      detail,
    ),
  );
  if (!chosen) return;
  try {
    const entry = listing.reports.find((r) => r.commit === chosen);
    show(detail, await api(`/api/verifications/${encodeURIComponent(chosen)}`), entry?.links || {});
  } catch (error) {
    report(error, detail);
  }
}

main();
