// The event stream: EventSource with a single-use ticket (POST /api/stream/tickets), so the
// API key never appears in a URL. A ticket opens one connection; when the connection drops,
// EventSource's own retry (with Last-Event-ID) meets a spent ticket, so we reconnect with a
// new ticket and `lastEventId` = the last id we showed: every event after it, none twice.
"use strict";
(function () {
  class ReconStream {
    constructor({ ticket, onEvent, onState }) {
      this.ticket = ticket; // async () => ticket string
      this.onEvent = onEvent;
      this.onState = onState;
      this.lastId = null;
      this.source = null;
      this.stopped = false;
      this.timer = null;
      this.connects = 0;
    }

    async start() {
      this.stopped = false;
      await this.open();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.source) this.source.close();
      this.source = null;
      this.onState("off");
    }

    async open() {
      if (this.stopped) return;
      let ticket;
      try {
        ticket = await this.ticket();
      } catch (err) {
        this.onState("error: " + err.message);
        this.retry();
        return;
      }
      const params = new URLSearchParams({ ticket });
      if (this.lastId !== null) params.set("lastEventId", String(this.lastId));
      const source = new EventSource("/api/stream/events?" + params.toString());
      this.source = source;
      source.onopen = () => {
        this.connects += 1;
        this.onState("live");
      };
      const handle = (message) => {
        const id = Number(message.lastEventId);
        if (this.lastId !== null && id <= this.lastId) return; // never shown twice
        this.lastId = id;
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (err) {
          data = { message: String(message.data) };
        }
        this.onEvent(message.type, id, data);
      };
      source.addEventListener("position:updated", handle);
      source.addEventListener("system:error", handle);
      source.onerror = () => {
        // The browser retries on its own with the spent ticket; take over instead.
        source.close();
        if (this.source === source) this.source = null;
        this.onState("reconnecting");
        this.retry();
      };
    }

    retry() {
      if (this.stopped) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.open(), 1000);
    }
  }

  window.ReconStream = ReconStream;
})();
