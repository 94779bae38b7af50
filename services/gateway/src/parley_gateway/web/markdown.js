// An answer's Markdown as safe DOM: parsed by marked, sanitised by DOMPurify, code
// highlighted by highlight.js, and the citation markers ([1], [2]...) made into buttons.
//
// Model output and documents are untrusted. Raw HTML in the Markdown is shown as text, not
// parsed; what marked produces goes through DOMPurify (no script, no event handler, no
// style, no form control, links only to http(s) and mailto); the page's
// Content-Security-Policy would refuse anything that slipped through.
import { DOMPurify, hljs, Marked } from "./vendor.js";

const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => escapes[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    // HTML written in the Markdown is shown as the text it is.
    html({ text }) {
      return escapeHtml(text);
    },
  },
});

hljs.configure({ ignoreUnescapedHTML: true });

const purifier = DOMPurify();
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});
const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
};

const MARKER = /\[(\d{1,3})\]/g;

/**
 * The DOM of `text` rendered as Markdown, with each `[n]` that names one of `citations`
 * as a button calling `onCite(marker)`.
 */
export function renderMarkdown(text, citations = [], onCite = null) {
  const html = marked.parse(text ?? "");
  const fragment = purifier.sanitize(html, PURIFY);
  for (const block of fragment.querySelectorAll("pre code")) {
    hljs.highlightElement(block);
  }
  if (citations.length && onCite) {
    linkMarkers(fragment, citations, onCite);
  }
  return fragment;
}

function linkMarkers(root, citations, onCite) {
  const byMarker = new Map(citations.map((c) => [String(c.marker), c]));
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      return node.parentElement?.closest("code, pre, a")
        ? NodeFilter.FILTER_REJECT
        : NodeFilter.FILTER_ACCEPT;
    },
  });
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    MARKER.lastIndex = 0;
    if (MARKER.test(node.data)) found.push(node);
  }
  for (const node of found) {
    const pieces = [];
    let last = 0;
    for (const match of node.data.matchAll(MARKER)) {
      const citation = byMarker.get(match[1]);
      if (!citation) continue;
      pieces.push(document.createTextNode(node.data.slice(last, match.index)));
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cite";
      button.textContent = match[1];
      button.dataset.marker = match[1];
      button.setAttribute("aria-label", `Source ${match[1]}: ${citation.title || "untitled"}`);
      button.addEventListener("click", () => onCite(match[1]));
      pieces.push(button);
      last = match.index + match[0].length;
    }
    if (!pieces.length) continue;
    pieces.push(document.createTextNode(node.data.slice(last)));
    node.replaceWith(...pieces);
  }
}
