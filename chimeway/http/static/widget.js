/*
 * Chimeway inbox bell: the reference client of the in-app inbox (design §14).
 * One file, no build step, no framework. Served by `chimeway serve` at /v1/inbox/widget.js.
 *
 *   <div id="bell"></div>
 *   <script src="https://notify.example.com/v1/inbox/widget.js"></script>
 *   <script>
 *     ChimewayInbox.mount(document.getElementById("bell"), {
 *       url: "https://notify.example.com",            // where `chimeway serve` answers
 *       getToken: () => fetch("/my/inbox-token").then((r) => r.text()),  // your app issues it
 *     });
 *   </script>
 *
 * Options: `url` (default: this page's origin), `token` (a token from cw.inbox.token) or
 * `getToken` (an async function returning a fresh one: called first when no token is given,
 * and again when the server says the token expired), `pageSize` (default 20),
 * `markSeenOnOpen` (default true: opening the list marks every item seen), `follow`
 * (default true: a click on an item with a primary action opens its URL once marked read),
 * `onEvent(name, data)` (called for every stream event).
 *
 * It shows the unread count on a bell; a click opens the list (newest first, "Load more"
 * pages on with the server's cursor); a click on an item marks it read. It listens to
 * GET /v1/inbox/stream (server-sent events, read with fetch so the token travels in the
 * Authorization header, never in a URL), adds new items as they arrive, and reconnects
 * with Last-Event-ID after a drop. Content is inserted as text, never as HTML.
 */
(function (global) {
  "use strict";

  var STYLE =
    ".cw-root{position:relative;display:inline-block;font:14px/1.4 system-ui,sans-serif}" +
    ".cw-bell{position:relative;border:1px solid #ccc;border-radius:6px;background:#fff;" +
    "padding:6px 10px;cursor:pointer;font-size:18px}" +
    ".cw-badge{position:absolute;top:-6px;right:-8px;min-width:18px;padding:0 5px;" +
    "border-radius:9px;background:#d93025;color:#fff;font-size:12px;line-height:18px;" +
    "text-align:center}" +
    ".cw-badge[hidden]{display:none}" +
    ".cw-panel{position:absolute;right:0;z-index:1000;width:340px;max-height:420px;" +
    "overflow:auto;margin-top:6px;border:1px solid #ccc;border-radius:8px;background:#fff;" +
    "box-shadow:0 4px 16px rgba(0,0,0,.15)}" +
    ".cw-panel[hidden]{display:none}" +
    ".cw-head{display:flex;justify-content:space-between;align-items:center;" +
    "padding:8px 12px;border-bottom:1px solid #eee;font-weight:600}" +
    ".cw-head button,.cw-more{border:0;background:none;color:#1a73e8;cursor:pointer}" +
    ".cw-item{display:block;width:100%;text-align:left;border:0;border-bottom:1px solid #f0f0f0;" +
    "background:#fff;padding:10px 12px;cursor:pointer}" +
    ".cw-item.cw-unread{background:#eef4ff}" +
    ".cw-headline{font-weight:600}.cw-body{color:#444}" +
    ".cw-action{color:#1a73e8;font-size:13px}" +
    ".cw-empty{padding:16px 12px;color:#777}" +
    ".cw-more{display:block;width:100%;padding:8px}";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeUrl(url) {
    // Only http(s) and relative links: never javascript: or data: URLs from content.
    if (typeof url !== "string") return null;
    try {
      var parsed = new URL(url, global.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  function mount(element, options) {
    options = options || {};
    var base = (options.url || global.location.origin).replace(/\/+$/, "") + "/v1/inbox";
    var pageSize = options.pageSize || 20;
    var markSeenOnOpen = options.markSeenOnOpen !== false;
    var token = options.token || null;
    var closed = false;
    var items = []; // newest first
    var byId = {};
    var nextCursor = null;
    var lastEventId = null;
    var streamAbort = null;
    var retryDelay = 1000;

    if (!document.getElementById("cw-inbox-style")) {
      var style = el("style");
      style.id = "cw-inbox-style";
      style.textContent = STYLE;
      document.head.appendChild(style);
    }
    var root = el("div", "cw-root");
    var bell = el("button", "cw-bell", "\uD83D\uDD14");
    bell.type = "button";
    bell.setAttribute("aria-haspopup", "true");
    bell.setAttribute("aria-label", "Notifications");
    var badge = el("span", "cw-badge");
    badge.hidden = true;
    bell.appendChild(badge);
    var panel = el("div", "cw-panel");
    panel.hidden = true;
    var head = el("div", "cw-head");
    head.appendChild(el("span", null, "Notifications"));
    var markAll = el("button", "cw-mark-all", "Mark all read");
    markAll.type = "button";
    head.appendChild(markAll);
    var list = el("div", "cw-list");
    var more = el("button", "cw-more", "Load more");
    more.type = "button";
    more.hidden = true;
    panel.appendChild(head);
    panel.appendChild(list);
    panel.appendChild(more);
    root.appendChild(bell);
    root.appendChild(panel);
    element.appendChild(root);

    function ensureToken(fresh) {
      if (token && !fresh) return Promise.resolve(token);
      if (typeof options.getToken !== "function") {
        return Promise.reject(new Error("the inbox token expired and there is no getToken"));
      }
      return Promise.resolve(options.getToken()).then(function (t) {
        token = String(t).trim();
        return token;
      });
    }

    // A request with the token; on 401, once with a fresh one.
    function call(path, init, retried) {
      return ensureToken(false).then(function (t) {
        init = init || {};
        var headers = Object.assign({}, init.headers || {}, { Authorization: "Bearer " + t });
        return fetch(base + path, Object.assign({}, init, { headers: headers })).then(
          function (response) {
            if (response.status === 401 && !retried && typeof options.getToken === "function") {
              return ensureToken(true).then(function () {
                return call(path, init, true);
              });
            }
            if (!response.ok) throw new Error("inbox request failed: " + response.status);
            return response.json();
          }
        );
      });
    }

    function showCounts(counts) {
      var unread = counts.unread || 0;
      badge.textContent = unread > 99 ? "99+" : String(unread);
      badge.hidden = unread === 0;
      bell.setAttribute("aria-label", "Notifications, " + unread + " unread");
      root.setAttribute("data-unread", String(unread));
    }

    function render() {
      list.textContent = "";
      if (!items.length) list.appendChild(el("div", "cw-empty", "Nothing here yet."));
      items.forEach(function (item) {
        list.appendChild(renderItem(item));
      });
      more.hidden = !nextCursor;
    }

    function renderItem(item) {
      var content = item.content || {};
      var row = el("button", "cw-item" + (item.read_at ? "" : " cw-unread"));
      row.type = "button";
      row.setAttribute("data-id", item.id);
      row.appendChild(el("div", "cw-headline", content.headline || ""));
      row.appendChild(el("div", "cw-body", content.body || ""));
      var action = content.primary_action;
      var href = action && safeUrl(action.url);
      if (href) row.appendChild(el("div", "cw-action", action.label || "Open"));
      row.addEventListener("click", function () {
        markRead(item).then(function () {
          if (href && options.follow !== false) global.location.assign(href);
        });
      });
      return row;
    }

    function add(item, atTop) {
      if (byId[item.id]) {
        Object.assign(byId[item.id], item);
        return;
      }
      byId[item.id] = item;
      if (atTop) items.unshift(item);
      else items.push(item);
    }

    function load(reset) {
      var query = "?limit=" + pageSize;
      if (!reset && nextCursor) query += "&cursor=" + encodeURIComponent(nextCursor);
      return call("/" + query).then(function (page) {
        if (reset) {
          items = [];
          byId = {};
        }
        page.items.forEach(function (item) {
          add(item, false);
        });
        nextCursor = page.next_cursor;
        render();
      });
    }

    function refreshCounts() {
      return call("/counts").then(showCounts);
    }

    function mark(ids, action) {
      return call("/mark", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: ids, action: action }),
      });
    }

    function markRead(item) {
      if (item.read_at) return Promise.resolve();
      item.read_at = new Date().toISOString();
      item.seen_at = item.seen_at || item.read_at;
      render();
      return mark([item.id], "read").then(refreshCounts);
    }

    bell.addEventListener("click", function () {
      panel.hidden = !panel.hidden;
      if (!panel.hidden) {
        load(true).then(function () {
          if (markSeenOnOpen && items.some(function (i) { return !i.seen_at; })) {
            return mark("all", "seen").then(refreshCounts);
          }
        });
      }
    });
    markAll.addEventListener("click", function () {
      items.forEach(function (i) {
        i.read_at = i.read_at || new Date().toISOString();
      });
      render();
      mark("all", "read").then(refreshCounts);
    });
    more.addEventListener("click", function () {
      load(false);
    });

    function onEvent(name, data, id) {
      if (id) lastEventId = id;
      if (name === "counts") showCounts(data);
      else if (name === "item") {
        add(data, true);
        if (!panel.hidden) render();
      } else if ((name === "marked" || name === "reload") && !panel.hidden) load(true);
      if (name === "reload") refreshCounts();
      if (typeof options.onEvent === "function") options.onEvent(name, data);
    }

    // Server-sent events over fetch: the token goes in a header, not in the URL.
    function stream(fresh) {
      if (closed) return;
      ensureToken(fresh)
        .then(function (t) {
          streamAbort = new AbortController();
          var headers = { Authorization: "Bearer " + t, Accept: "text/event-stream" };
          if (lastEventId) headers["Last-Event-ID"] = lastEventId;
          return fetch(base + "/stream", { headers: headers, signal: streamAbort.signal });
        })
        .then(function (response) {
          if (response.status === 401) return "expired";
          if (!response.ok || !response.body) throw new Error("stream failed: " + response.status);
          retryDelay = 1000;
          return readEvents(response.body.getReader()).then(function () {
            return "ended";
          });
        })
        .then(
          function (how) {
            if (closed) return;
            if (how === "expired") {
              // Refused: come back with a fresh token, if the page can get one.
              if (typeof options.getToken !== "function") return;
              setTimeout(function () {
                stream(true);
              }, retryDelay);
              retryDelay = Math.min(retryDelay * 2, 30000);
              return;
            }
            // The server ends a stream when its token expires: reconnect (a 401 then
            // fetches a fresh token).
            setTimeout(function () {
              stream(false);
            }, 100);
          },
          function () {
            if (closed) return;
            setTimeout(function () {
              stream(false);
            }, retryDelay);
            retryDelay = Math.min(retryDelay * 2, 30000);
          }
        );
    }

    function readEvents(reader) {
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
          var end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
          return pump();
        });
      }
      return pump();
    }

    function dispatch(block) {
      var name = "message";
      var data = [];
      var id = null;
      block.split("\n").forEach(function (line) {
        if (!line || line.charAt(0) === ":") return;
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
        else if (field === "retry" && /^\d+$/.test(value)) retryDelay = Number(value);
      });
      if (!data.length) return;
      try {
        onEvent(name, JSON.parse(data.join("\n")), id);
      } catch (e) {
        /* an event this version does not understand */
      }
    }

    refreshCounts().catch(function () {});
    stream(false);

    return {
      refresh: function () {
        return Promise.all([refreshCounts(), load(true)]);
      },
      close: function () {
        closed = true;
        if (streamAbort) streamAbort.abort();
        element.removeChild(root);
      },
    };
  }

  global.ChimewayInbox = { mount: mount };
})(window);
