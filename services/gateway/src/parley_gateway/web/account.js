// The account and memories panels: who is signed in, usage this month, the user's memories,
// and the user's data (a download of all of it, or its deletion everywhere).
import { describe } from "./api.js";
import { $, h, say } from "./dom.js";

export class Account {
  /** `onDeleted()` runs when the user's data was deleted. */
  constructor(api, me, { onDeleted }) {
    this.api = api;
    this.me = me;
    this.onDeleted = onDeleted;
    $("load-usage").addEventListener("click", () => this.usage());
    $("export-data").addEventListener("click", () => this.exportData());
    $("delete-data").addEventListener("click", () => this.deleteData());
    const rows = [
      ["Tenant", me.tenant_id],
      ["User", me.user_id],
      ["Signed in with", me.credential === "api_key" ? "an API key" : "a token"],
      ["Scopes", me.scopes.join(", ")],
    ];
    $("account").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  async usage() {
    const target = $("usage");
    try {
      const report = await this.api.request("GET", "/v1/usage");
      const rows = report.rows.map((row) =>
        h("tr", {}, h("th", { scope: "row" }, row.model), h("td", {}, String(row.requests)),
          h("td", {}, `${row.input_tokens} / ${row.output_tokens}`),
          h("td", {}, `$${row.cost_usd.toFixed(4)}`)),
      );
      const total = report.total;
      target.replaceChildren(
        h("table", { class: "usage-table" },
          h("caption", { class: "visually-hidden" }, "Usage by model this month"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Requests"),
            h("th", { scope: "col" }, "Tokens in / out"), h("th", { scope: "col" }, "Cost"))),
          h("tbody", {}, rows),
          h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), h("td", {}, String(total.requests)),
            h("td", {}, `${total.input_tokens} / ${total.output_tokens}`),
            h("td", {}, `$${total.cost_usd.toFixed(4)}`))),
        ),
      );
    } catch (error) {
      target.replaceChildren(h("p", { class: "error" }, describe(error)));
    }
  }

  async exportData() {
    const status = $("data-status");
    status.textContent = "Preparing your archive…";
    try {
      const response = await this.api.fetch("GET", "/v1/me/export");
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: `parley-export-${this.me.user_id}.zip` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.textContent = "Your archive is downloaded.";
    } catch (error) {
      status.textContent = describe(error);
    }
  }

  async deleteData() {
    const status = $("data-status");
    const question =
      "Delete all your conversations, documents, memories and usage records in Parley? " +
      "This cannot be undone.";
    if (!confirm(question)) return;
    status.textContent = "Deleting…";
    try {
      const result = await this.api.request("DELETE", "/v1/me/data");
      const counts = Object.entries(result.deleted ?? {})
        .map(([what, n]) => `${n} ${what.replaceAll("_", " ")}`)
        .join(", ");
      status.textContent = `Deleted: ${counts || "nothing was stored"}.`;
      this.onDeleted?.();
    } catch (error) {
      status.textContent = describe(error);
    }
  }
}

export class Memories {
  constructor(api) {
    this.api = api;
  }

  /** Lists the memories; the tab stays hidden where the API has no memories. */
  async load() {
    let page;
    try {
      page = await this.api.request("GET", "/v1/memories?page_size=100");
    } catch (error) {
      $("tab-memories").hidden = error.status === 404 || error.status === 405;
      if (!$("tab-memories").hidden) say($("memories-empty"), describe(error));
      return;
    }
    $("tab-memories").hidden = false;
    const memories = page.data ?? page.memories ?? [];
    $("memories").replaceChildren(...memories.map((memory) => this.item(memory)));
    say($("memories-empty"), memories.length ? "" : "Nothing remembered yet.");
  }

  item(memory) {
    const remove = h("button", { type: "button", class: "quiet danger", "aria-label": `Forget: ${memory.content}` }, "Forget");
    const when = memory.created_at ? new Date(memory.created_at).toLocaleDateString() : "";
    const item = h("li", { class: "memory" }, h("span", {}, memory.content), h("span", { class: "hint" }, ` ${when}`), remove);
    remove.addEventListener("click", async () => {
      try {
        await this.api.request("DELETE", `/v1/memories/${encodeURIComponent(memory.id)}`);
        item.remove();
        if (!$("memories").children.length) say($("memories-empty"), "Nothing remembered yet.");
      } catch (error) {
        say($("memories-empty"), describe(error));
      }
    });
    return item;
  }
}
