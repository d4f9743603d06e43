// Courier actions work offline: each is queued on the phone with its own id and sent when
// the connection allows. The server records an id once, so resending is always safe.
(function () {
  "use strict";
  const KEY = "dispensary.courier.queue";
  const statusBox = document.getElementById("queue-status");

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function save(queue) {
    try {
      localStorage.setItem(KEY, JSON.stringify(queue));
    } catch (e) {
      // The phone's storage is full: keep every action, without the photos it could not hold.
      queue.forEach((item) => { delete item.fields.photo; });
      localStorage.setItem(KEY, JSON.stringify(queue));
      say("The photo could not be kept on the phone; the delivery is sent without it.");
    }
  }
  function say(text) {
    if (!statusBox) { return; }
    statusBox.hidden = !text;
    statusBox.textContent = text || "";
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // A photo travels as a file in a multipart body; everything else as a plain form.
  function encode(fields) {
    if (!fields.photo) { return new URLSearchParams(fields); }
    const body = new FormData();
    Object.entries(fields).forEach(([name, value]) => {
      if (name !== "photo") { body.append(name, value); }
    });
    const [head, data] = fields.photo.split(",");
    const type = head.slice(5, head.indexOf(";"));
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    body.append("photo", new Blob([bytes], { type: type }), "photo." + type.split("/")[1]);
    return body;
  }

  // Photos are shrunk on the phone (at most 1600 px, JPEG) so that the queue can hold them
  // while offline and they upload quickly; the server checks and re-encodes them anyway.
  const PHOTO_SIDE = 1600;
  async function shrink(file) {
    try {
      const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      const scale = Math.min(1, PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return canvas.toDataURL("image/jpeg", 0.8);
    } catch (e) {
      say("That file is not a photo this phone can read; choose another.");
      return null;
    }
  }

  const RETRIES = 6;  // a server error answered this often is reported, not retried
  let flushing = false;
  async function flush() {
    if (flushing) { return; }
    flushing = true;
    let queue = load();
    try {
      while (queue.length) {
        const item = queue[0];
        let response;
        try {
          response = await fetch(item.url, { method: "POST", body: encode(item.fields),
                                             credentials: "same-origin" });
        } catch (e) {
          say("No connection: " + queue.length + " action(s) will be sent when it returns.");
          return;
        }
        const body = await response.json().catch(() => ({}));
        if ((response.status >= 500 || body.code === "concurrent_change") &&
            (item.tries || 0) < RETRIES) {
          // Not an answer about the action: keep it, and send it again later.
          item.tries = (item.tries || 0) + 1;
          save(queue);
          say((body.error || "The server could not take the action now.") + " " +
              queue.length + " action(s) will be sent again.");
          return;
        }
        queue.shift();
        save(queue);
        if (!response.ok) {
          const details = (body.errors || []).map((e) => e.message).join(" ");
          say((body.error || "The action was refused.") + " " + details);
          return;
        }
        if (!queue.length && body.next) { window.location.assign(body.next); return; }
      }
      say("");
    } finally {
      flushing = false;
    }
  }

  // Signature pad: draw with a finger or mouse; sent as a PNG data URL.
  const canvas = document.getElementById("signature-pad");
  let signed = false;
  if (canvas) {
    const ctx = canvas.getContext("2d");
    ctx.lineWidth = 2.5; ctx.lineCap = "round"; ctx.strokeStyle = "#111";
    let drawing = false;
    const at = (e) => { const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * canvas.width / r.width,
              (e.clientY - r.top) * canvas.height / r.height]; };
    canvas.addEventListener("pointerdown", (e) => { drawing = true; const [x, y] = at(e);
      ctx.beginPath(); ctx.moveTo(x, y); canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointermove", (e) => { if (!drawing) { return; }
      const [x, y] = at(e); ctx.lineTo(x, y); ctx.stroke(); signed = true; });
    canvas.addEventListener("pointerup", () => { drawing = false; });
    document.getElementById("clear-signature").addEventListener("click", () => {
      ctx.clearRect(0, 0, canvas.width, canvas.height); signed = false; });
  }

  document.querySelectorAll("form.courier-action").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const photo = data.get("photo");
      data.delete("photo");
      const fields = Object.fromEntries(data.entries());
      fields.action = form.dataset.action;
      fields.client_action_id = newId();
      // When it happened: a queued delivery may reach the pharmacy after a recall did.
      fields.recorded_at = new Date().toISOString();
      if (form.dataset.action === "delivered" && canvas && signed) {
        fields.signature = canvas.toDataURL("image/png");
      }
      if (form.dataset.action === "delivered" && photo && photo.size) {
        const shrunk = await shrink(photo);
        if (!shrunk) { return; }
        fields.photo = shrunk;
      }
      const queue = load();
      queue.push({ url: form.action, fields: fields });
      save(queue);
      if (form.dataset.action === "arrived") { say("Arrival recorded."); }
      flush();
    });
  });
  window.addEventListener("online", flush);
  setInterval(flush, 10000);
  flush();
}());
