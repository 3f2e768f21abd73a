// Standing approvals in force, on the queue: listed, kept live from the feed
// (grant.created, grant.revoked; reloaded from /grants/ on every (re)connection, as the
// feed's snapshot holds requests and alerts only) and revoked in place.
import { localiseTimes, postForm } from "./feed.js";

const section = document.getElementById("grants");
const list = document.getElementById("grant-list");
const template = document.getElementById("grant-template");

export async function reloadGrants() {
  if (!section) return;
  try {
    const response = await fetch("/grants/", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) return;
    const { grants } = await response.json();
    list.replaceChildren(...grants.map(grantItem));
    refresh();
  } catch {
    // Offline: the list stays as it was; the next snapshot reloads it.
  }
}

export function grantEvent(event) {
  if (!section) return;
  list.querySelector(`li[data-id="${event.grant.id}"]`)?.remove();
  if (event.type === "grant.created") list.append(grantItem(event.grant));
  refresh();
}

function refresh() {
  section.hidden = list.children.length === 0;
  localiseTimes(list);
}

function grantItem(grant) {
  const item = template.content.firstElementChild.cloneNode(true);
  item.dataset.id = grant.id;
  item.querySelector(".what").textContent = `${grant.operation} by ${grant.agent}`;
  const rules = Object.entries(grant.rules)
    .map(([rule, value]) => (value === null ? rule : `${rule} ≤ ${value}`))
    .join(", ");
  item.querySelector(".scope").textContent =
    `${rules || "no rule"}; ${grant.any_payload ? "any payload" : "the same payload"}; ` +
    `${grant.uses_left} of ${grant.max_uses} uses left; granted by ${grant.by}`;
  const until = item.querySelector("time");
  until.dateTime = grant.expires_at;
  until.textContent = grant.expires_at;
  const form = item.querySelector("form");
  form.action = `/grants/${grant.id}/revoke`;
  return item;
}

list?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const item = form.closest("li");
  const { status, body } = await postForm(form);
  if (status === 200 || status === 404) {
    item.remove();
    refresh();
  } else {
    item.querySelector(".result").textContent = (body.error && body.error.message) || `The server answered ${status}.`;
  }
});
