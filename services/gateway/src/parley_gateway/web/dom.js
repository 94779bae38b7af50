// Building DOM from data without parsing HTML: text always lands as text.

/** An element `tag` with `props` (properties, or `on<event>` listeners) and `children`. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else if (key.startsWith("aria-") || key.startsWith("data-") || key === "role") {
      element.setAttribute(key, value === true ? "true" : value);
    } else {
      element[key] = value;
    }
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export const $ = (id) => document.getElementById(id);

/** Shows `element` with `text`, or hides it when `text` is empty. */
export function say(element, text) {
  element.textContent = text ?? "";
  element.hidden = !text;
}

/** "12 KB" and the like. */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
