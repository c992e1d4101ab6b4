// The JSON API from the dashboard's pages: one fetch wrapper that turns problem+json into an error carrying its
// `code` and `errors[]`, the page header with its navigation, and the sign-in form (the token goes in a POST body,
// never a URL; the server answers with an HttpOnly cookie that stands for it).
import { el, fill, notice } from "./view.js";

/** A problem+json answer (RFC 9457) as an Error. */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "http_error";
    this.errors = problem.errors || [];
  }
}

/** Call the API: the parsed JSON answer, or an ApiProblem. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let document = null;
  try {
    document = text ? JSON.parse(text) : null;
  } catch {
    document = { detail: text.slice(0, 200) };
  }
  if (!response.ok) throw new ApiProblem(response.status, document || {});
  return document;
}

const PAGES = [
  ["/", "Runs", "runs"],
  ["/start", "Start a run", "start"],
  ["/compare", "Compare", "compare"],
  ["/verification", "Verification", "verification"],
];

/** The page header (navigation and sign-in state); resolves to GET /api/session's answer. */
export async function layout(current) {
  const header = document.getElementById("top");
  const nav = el(
    "nav",
    {},
    PAGES.map(([href, label, key]) => el("a", { href, "aria-current": key === current ? "page" : null }, label)),
  );
  const account = el("div", { id: "account", class: "muted" });
  fill(header, el("a", { class: "brand", href: "/" }, "trainer-tinygrad"), nav, account);
  const session = await api("/api/session");
  if (session.token_required) {
    if (session.signed_in) {
      fill(account, "signed in ", el("button", { id: "sign-out", type: "button", onclick: signOut }, "Sign out"));
    } else {
      fill(account, el("button", { id: "show-sign-in", type: "button", onclick: () => showSignIn() }, "Sign in"));
    }
  }
  window.dashboard = Object.assign(window.dashboard || {}, { session });
  return session;
}

async function signOut() {
  await api("/api/session", { method: "DELETE" });
  location.reload();
}

/** Show the sign-in form above the page's content (and hide the content while reads need it). */
export function showSignIn(message) {
  const main = document.getElementById("main");
  let form = document.getElementById("sign-in");
  if (!form) {
    const input = el("input", {
      type: "password",
      name: "token",
      id: "token",
      autocomplete: "current-password",
      required: true,
    });
    const status = el("div", { id: "sign-in-status" });
    // method=post: even if this script did not run, a submit would never put the token in a URL.
    form = el(
      "form",
      { id: "sign-in", class: "panel", method: "post" },
      el("h2", {}, "Sign in"),
      el("p", { class: "muted" }, "This server needs its API token (TRAINER_API_TOKEN). It is sent once; the browser keeps an HttpOnly cookie instead."),
      el("label", { for: "token" }, "API token "),
      input,
      " ",
      el("button", { type: "submit", class: "primary", id: "sign-in-submit" }, "Sign in"),
      status,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("/api/session", { method: "POST", body: { token: input.value } });
        location.reload();
      } catch (error) {
        fill(status, notice(error.status === 403 ? "That is not this server's token." : error.message, "error"));
      }
    });
    main.prepend(form);
  }
  if (message) form.querySelector("#sign-in-status").replaceChildren(notice(message));
  form.querySelector("input").focus();
}

/** Reads need the token: hide what needs reading and offer the sign-in form. */
export function requireSignIn() {
  for (const section of document.querySelectorAll("[data-needs-read]")) section.classList.add("hidden");
  showSignIn("Sign in to see this server's runs.");
}

/** What a page does with an error it cannot handle itself: sign-in for 401, a notice for anything else. */
export function report(error, where = document.getElementById("main")) {
  if (error instanceof ApiProblem && error.status === 401) {
    requireSignIn();
    return;
  }
  console.warn(error);
  where.prepend(notice(error.message || String(error), "error"));
}
