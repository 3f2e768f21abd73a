// /policies/: say in words what an operation name may be, instead of the browser's
// "Please match the requested format."
const field = document.getElementById("new-operation");
if (field) {
  const check = () => field.setCustomValidity(field.validity.patternMismatch ? field.dataset.mismatch : "");
  field.addEventListener("input", check);
  field.addEventListener("invalid", check);
  check();
}
