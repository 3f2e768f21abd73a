// History: times in the reader's own zone; a changed select filters at once.
import { localiseTimes } from "./feed.js";

localiseTimes();
for (const select of document.querySelectorAll("form.filters select")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}
