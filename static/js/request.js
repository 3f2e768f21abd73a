// One request's page: its countdown, its decision arriving live, and the reason check.
import { clockOffset, connectFeed, countdownText, describeDecision, localiseTimes, showState } from "./feed.js";

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
