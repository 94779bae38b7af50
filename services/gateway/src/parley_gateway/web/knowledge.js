// The knowledge panel: files dropped or chosen are uploaded to a knowledge base, their ingest
// job followed to the end; the knowledge base's documents listed and deleted.
import { describe } from "./api.js";
import { $, bytes, h, pause, say } from "./dom.js";

const JOB_POLL_MS = 400;
const JOB_POLLS = 3000; // 20 minutes at most
const STAGES = {
  queued: "Waiting to be read",
  running: "Reading",
  succeeded: "Ready",
  failed: "Failed",
};

export class Knowledge {
  /** `onIndexed(kb)` runs when a document of `kb` is ready. */
  constructor(api, { onIndexed }) {
    this.api = api;
    this.onIndexed = onIndexed;
    this.nextPage = null;
    this.name = $("kb-name");
    this.name.addEventListener("change", () => this.list());
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      this.uploadAll(event.dataTransfer.files);
    });
    $("file-input").addEventListener("change", (event) => {
      this.uploadAll(event.target.files);
      event.target.value = "";
    });
    $("more-documents").addEventListener("click", () => this.list(this.nextPage));
  }

  get kb() {
    return this.name.value.trim() || "default";
  }

  /** Shows knowledge base `kb`. */
  open(kb) {
    if (kb && kb !== this.name.value) {
      this.name.value = kb;
      this.list();
    }
  }

  uploadAll(files) {
    for (const file of files) this.upload(this.kb, file);
  }

  async upload(kb, file) {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Progress of ${file.name}` });
    const state = h("span", { class: "upload-state" }, "Uploading");
    const item = h(
      "li",
      { class: "upload" },
      h("span", { class: "upload-name" }, file.name),
      h("span", { class: "hint" }, ` ${bytes(file.size)} → ${kb}`),
      progress,
      state,
    );
    $("uploads").prepend(item);
    const form = new FormData();
    form.append("title", file.name.replace(/\.[^.]+$/, ""));
    form.append("file", file, file.name);
    let created;
    try {
      created = await this.api.upload(
        `/v1/knowledge-bases/${encodeURIComponent(kb)}/documents/upload`,
        form,
        (share) => {
          progress.value = share * 0.2;
          state.textContent = `Uploading ${Math.round(share * 100)}%`;
        },
      );
    } catch (error) {
      item.classList.add("failed");
      state.textContent = describe(error);
      return;
    }
    if (created.deduplicated) {
      progress.value = 1;
      state.textContent = "Already in this knowledge base";
      this.list();
      return;
    }
    await this.follow(created.job, progress, state, item);
    if (kb === this.kb) this.list();
  }

  async follow(job, progress, state, item) {
    for (let polls = 0; polls < JOB_POLLS; polls += 1) {
      progress.value = 0.2 + 0.8 * (job.progress ?? 0);
      const stage = job.stage ? ` (${job.stage})` : "";
      state.textContent = `${STAGES[job.state] ?? job.state}${stage}`;
      if (job.state === "succeeded") {
        progress.value = 1;
        state.textContent = `Ready: ${job.chunks_total ?? 0} passages`;
        item.classList.add("done");
        this.onIndexed?.(this.kb);
        return;
      }
      if (job.state === "failed") {
        item.classList.add("failed");
        state.textContent = `Failed: ${job.error ?? "the document could not be read"}`;
        return;
      }
      await pause(JOB_POLL_MS);
      try {
        job = await this.api.request("GET", `/v1/jobs/${job.id}`);
      } catch (error) {
        if (!error.network) {
          state.textContent = describe(error);
          return;
        }
      }
    }
    state.textContent = "Still being read; the list below will show it when ready.";
  }

  async list(pageToken = null) {
    const kb = this.kb;
    const query = new URLSearchParams({ page_size: "50" });
    if (pageToken) query.set("page_token", pageToken);
    let page;
    try {
      page = await this.api.request(
        "GET",
        `/v1/knowledge-bases/${encodeURIComponent(kb)}/documents?${query}`,
      );
    } catch (error) {
      say($("documents-empty"), describe(error));
      return;
    }
    const list = $("documents");
    if (!pageToken) list.replaceChildren();
    for (const document of page.documents) list.append(this.item(document));
    this.nextPage = page.next_page_token;
    $("more-documents").hidden = !this.nextPage;
    say($("documents-empty"), list.children.length ? "" : "No documents in this knowledge base.");
  }

  item(document) {
    const label = document.title || document.filename || document.id;
    const remove = h("button", { type: "button", class: "quiet danger", "aria-label": `Delete ${label}` }, "Delete");
    const item = h(
      "li",
      { class: "document" },
      h("span", { class: "document-title" }, label),
      h(
        "span",
        { class: "hint" },
        ` ${document.status}` +
          (document.chunk_count ? ` · ${document.chunk_count} passages` : "") +
          ` · ${bytes(document.size_bytes)}`,
      ),
      remove,
    );
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete “${label}” from ${document.knowledge_base_id}?`)) return;
      try {
        await this.api.request("DELETE", `/v1/documents/${document.id}`);
        item.remove();
        if (!$("documents").children.length) say($("documents-empty"), "No documents in this knowledge base.");
      } catch (error) {
        say($("documents-empty"), describe(error));
      }
    });
    return item;
  }
}
