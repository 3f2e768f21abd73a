// One request's page: its countdown, its decision arriving live, and the reason check.
import { clockOffset, connectFeed, countdownText, describeDecision, localiseTimes, showState, visible } from "./feed.js";

const page = document.querySelector("article.request");
const offset = clockOffset();
const countdown = document.getElementById("countdown");
const notice = document.getElementById("notice");
const panel = document.getElementById("decide-panel");

function tick() {
  if (countdown && page.dataset.deadline) {
    countdown.textContent = countdownText(page.dataset.deadline, page.dataset.action, offset);
  }
}

// Decided elsewhere (another operator, the timeout, the agent): say so and stop offering a decision.
function decided(request) {
  const status = document.getElementById("status");
  status.textContent = request.status;
  status.dataset.status = request.status;
  page.dataset.status = request.status;
  if (panel) panel.hidden = true;
  notice.hidden = false;
  notice.textContent = `This request was just ${describeDecision(request.decision)}. Reload for the full record.`;
}

const rejectForm = document.querySelector(".reject-form");
if (rejectForm) {
  rejectForm.noValidate = true;
  rejectForm.addEventListener("submit", (event) => {
    if (rejectForm.elements.reason.value.trim()) return;
    event.preventDefault();
    document.getElementById("decide-result").textContent = "A reason is required to reject.";
    rejectForm.elements.reason.focus();
  });
}

localiseTimes();
tick();
setInterval(tick, 1000);
if (page.dataset.status === "pending") {
  const status = document.getElementById("live-status");
  connectFeed({
    onSnapshot(snapshot) {
      // Gone from the pending list while we were away: it was decided.
      if (!snapshot.pending.some((request) => request.id === page.dataset.id) && page.dataset.status === "pending") {
        notice.hidden = false;
        notice.textContent = "This request is no longer pending. Reload for the decision.";
        if (panel) panel.hidden = true;
      }
    },
    onEvent(event) {
      if (event.type === "request.decided" && event.request.id === page.dataset.id) decided(event.request);
    },
    onState: (state, delay) => showState(status, state, delay),
  });
}

// Approve with changes: the edited payload must be a JSON object, and the operator sees
// what changes before the approval goes out (the second click confirms).
const approveForm = document.querySelector(".approve-form");
const editor = document.getElementById("payload-editor");
if (approveForm && editor) {
  const error = document.getElementById("payload-error");
  const diffBox = document.getElementById("payload-diff");
  const list = document.getElementById("payload-changes");
  const button = document.getElementById("approve-button");
  let confirmed = null; // the text whose changes the operator has seen

  const original = JSON.parse(editor.defaultValue || "{}");
  editor.addEventListener("input", () => {
    confirmed = null;
    diffBox.hidden = true;
    error.hidden = true;
    button.textContent = "Approve";
  });

  approveForm.addEventListener("submit", (event) => {
    const text = editor.value;
    let edited;
    try {
      edited = JSON.parse(text);
    } catch (problem) {
      event.preventDefault();
      return showError(`Not valid JSON: ${problem.message}`);
    }
    if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
      event.preventDefault();
      return showError("The payload must be a JSON object ({…}).");
    }
    const changes = jsonChanges(original, edited);
    if (changes.length === 0 || confirmed === text) return; // unchanged, or the changes were seen
    event.preventDefault();
    list.replaceChildren(...changes.map(describeChange));
    diffBox.hidden = false;
    confirmed = text;
    button.textContent = `Approve with ${changes.length} change${changes.length === 1 ? "" : "s"}`;
    button.focus();
  });

  function showError(message) {
    document.getElementById("edit-payload").open = true;
    error.textContent = message;
    error.hidden = false;
    editor.focus();
  }
}

// The same changes the server's audit records (oversight/diffs.py): JSON Pointer paths.
function jsonChanges(before, after, path = "") {
  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => {
      const child = `${path}/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`;
      if (!(key in before)) return [{ op: "add", path: child, to: after[key] }];
      if (!(key in after)) return [{ op: "remove", path: child, from: before[key] }];
      return jsonChanges(before[key], after[key], child);
    });
  }
  if (JSON.stringify(before) === JSON.stringify(after)) return [];
  return [{ op: "replace", path: path || "/", from: before, to: after }];
}

function describeChange(change) {
  const item = document.createElement("li");
  item.dataset.op = change.op;
  const words = { add: "add", remove: "remove", replace: "change" }[change.op];
  item.textContent = `${words} ${visible(change.path)}`;
  if (change.op !== "add") item.textContent += `: was ${visible(JSON.stringify(change.from))}`;
  if (change.op !== "remove") item.textContent += ` → ${visible(JSON.stringify(change.to))}`;
  return item;
}
