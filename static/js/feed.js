// The live feed (/ws/feed/) and small helpers shared by the pages.
// Everything that comes from agents is inserted with textContent, never as HTML.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

// Connects to the feed and reconnects by itself with jittered exponential backoff.
// onSnapshot gets every snapshot (first message of each connection): the page should
// trust it over whatever it showed before. onState gets "connecting" | "live" | "offline".
export function connectFeed({ onSnapshot, onEvent, onState }) {
  let attempt = 0;
  let timer = null;
  let socket = null;
  let stopped = false;

  function open() {
    onState("connecting");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // The pages never show routine approvals by the policy: they ask not to get them.
    socket = new WebSocket(scheme + location.host + "/ws/feed/?routine=0");
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "snapshot") {
        attempt = 0;
        onState("live");
        onSnapshot(event);
      } else {
        onEvent(event);
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (stopped) return;
      const delay = backoff(attempt++);
      onState("offline", delay);
      timer = setTimeout(open, delay);
    });
  }

  function backoff(n) {
    const ceiling = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** n);
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  // A laptop waking up should not wait out a long backoff.
  window.addEventListener("online", () => {
    if (socket === null && !stopped) {
      clearTimeout(timer);
      open();
    }
  });

  open();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close();
    },
  };
}

// The live-status line: what the socket is doing, in words.
export function showState(element, state, delay) {
  element.dataset.state = state;
  if (state === "live") element.textContent = "Live";
  else if (state === "connecting") element.textContent = "Connecting…";
  else element.textContent = `Offline — reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`;
}

// POSTs a decide form as JSON; resolves to {status, body}. Network failures come back as status 0.
export async function postForm(form, extra = {}) {
  const data = new FormData(form);
  for (const [name, value] of Object.entries(extra)) data.set(name, value);
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: data,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    let body = {};
    try {
      body = await response.json();
    } catch {
      body = { error: { message: `The server answered ${response.status}.` } };
    }
    return { status: response.status, body };
  } catch {
    return { status: 0, body: { error: { message: "Could not reach the server; try again." } } };
  }
}

// How far the browser's clock is from the server's, from the time the page was rendered.
export function clockOffset() {
  const mark = document.getElementById("server-now");
  const server = mark ? Date.parse(mark.dataset.now) : NaN;
  return Number.isNaN(server) ? 0 : server - Date.now();
}

// "auto-approves in 2:41", or what is happening once the deadline has passed.
export function countdownText(deadline, action, offset) {
  const left = Math.round((Date.parse(deadline) - (Date.now() + offset)) / 1000);
  const reject = action === "reject";
  if (Number.isNaN(left)) return "";
  if (left <= 0) return reject ? "auto-rejecting now…" : "auto-approving now…";
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  const seconds = String(left % 60).padStart(2, "0");
  const clock = hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
  return `${reject ? "auto-rejects" : "auto-approves"} in ${clock}`;
}

// Seconds left before the deadline (negative once passed).
export function secondsLeft(deadline, offset) {
  return (Date.parse(deadline) - (Date.now() + offset)) / 1000;
}

// A decision in words: "approved by olivia", "rejected by the timeout".
export function describeDecision(decision) {
  if (!decision) return "";
  if (decision.source === "operator" || decision.source === "agent") {
    return `${decision.outcome} by ${decision.by || decision.source}`;
  }
  return `${decision.outcome} by the ${decision.source}`;
}

// Shows every <time datetime> in the browser's own time zone.
export function localiseTimes(root = document) {
  for (const element of root.querySelectorAll("time[data-local]")) {
    const when = new Date(element.dateTime);
    if (!Number.isNaN(when.getTime())) {
      element.title = element.dateTime;
      element.textContent = when.toLocaleString();
    }
  }
}

// What a person cannot see for what it is (a right-to-left override, a zero-width space…)
// as its \uXXXX escape, as the server shows agents' text (oversight/jsontext.py `visible`).
export function visible(text) {
  return text.replace(/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/gu, (char) => char === "\n" ? char :
    Array.from({ length: char.length }, (_, i) => `\\u${char.charCodeAt(i).toString(16).padStart(4, "0")}`).join(""));
}
