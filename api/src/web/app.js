// The demo page: search, item pages with similar items, a "recently viewed" session kept in this
// browser, and recommendations for that session that refresh after each view. Every text that
// comes from the shop (titles, attributes) is set with textContent, never parsed as HTML.
"use strict";

const RECENT_KEY = "recsys.recent";
const USER_KEY = "recsys.user";
const MAX_RECENT = 20;
const RECS_COUNT = 12;

const $ = (id) => document.getElementById(id);

function recent() {
  try {
    const stored = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(stored) ? stored.filter((id) => typeof id === "string") : [];
  } catch (_) {
    return [];
  }
}

function remember(itemId) {
  const items = recent().filter((id) => id !== itemId);
  items.push(itemId);
  localStorage.setItem(RECENT_KEY, JSON.stringify(items.slice(-MAX_RECENT)));
}

function userId() {
  return localStorage.getItem(USER_KEY) || "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    const message = json && json.error ? json.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return json;
}

function describe(item) {
  const parts = [];
  if (item.year) parts.push(String(item.year));
  if (Array.isArray(item.genres)) parts.push(item.genres.join(", "));
  return parts.join(" · ");
}

// A button opening an item page, its title and details as text.
function itemButton(item) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "item-button";
  button.dataset.itemId = item.item_id;
  const title = document.createElement("span");
  title.textContent = item.title || item.item_id;
  button.append(title);
  const details = describe(item);
  if (details) {
    const small = document.createElement("small");
    small.textContent = details;
    button.append(small);
  }
  button.addEventListener("click", () => {
    location.hash = `#/item/${encodeURIComponent(item.item_id)}`;
  });
  return button;
}

function fill(list, items) {
  list.replaceChildren(
    ...items.map((item) => {
      const entry = document.createElement("li");
      entry.dataset.itemId = item.item_id;
      entry.append(itemButton(item));
      return entry;
    }),
  );
}

async function itemsByIds(ids) {
  if (ids.length === 0) return [];
  const answer = await api("POST", "/items/get_by_ids", { item_ids: ids });
  const known = new Map(answer.items.map((item) => [item.item_id, item]));
  return ids.map((id) => known.get(id) || { item_id: id });
}

async function search(query) {
  const status = $("search-status");
  status.textContent = "Searching…";
  try {
    const answer = await api("GET", `/items/search?q=${encodeURIComponent(query)}&limit=10`);
    fill($("search-results"), answer.items);
    status.textContent = answer.items.length ? "" : `No title matches “${query}”.`;
  } catch (error) {
    $("search-results").replaceChildren();
    status.textContent = `Search failed: ${error.message}`;
  }
}

async function showRecent() {
  const ids = recent().slice().reverse();
  try {
    fill($("recent-strip"), await itemsByIds(ids));
  } catch (_) {
    fill($("recent-strip"), ids.map((id) => ({ item_id: id })));
  }
}

async function showRecommendations() {
  const info = $("recs-info");
  const user = userId();
  const body = {
    user_ids_raw: user ? [user] : [],
    item_seq_raw: [recent()],
    candidate_items_raw: [],
  };
  const started = performance.now();
  try {
    const answer = await api("POST", `/recs/retrieve?count=${RECS_COUNT}&debug=true`, body);
    const took = performance.now() - started;
    const items = answer.recommendations.map((rec) => ({ item_id: rec.item_id, ...rec }));
    fill($("recs-grid"), items);
    const meta = answer.metadata;
    const parts = [`source: ${meta.source}`];
    if (meta.fallback_reason) parts.push(`reason: ${meta.fallback_reason}`);
    if (meta.model_version) parts.push(`model: ${meta.model_version}`);
    parts.push(`${took.toFixed(1)} ms`);
    info.textContent = parts.join(" · ");
    info.dataset.source = meta.source;
  } catch (error) {
    $("recs-grid").replaceChildren();
    info.textContent = `Recommendations failed: ${error.message}`;
  }
}

async function showUser() {
  const user = userId();
  $("user-input").value = user;
  $("user-view").hidden = !user;
  if (!user) return;
  const status = $("user-status");
  try {
    const history = await api("GET", `/users/${encodeURIComponent(user)}/history`);
    const ids = history.recent_items.slice().reverse().slice(0, MAX_RECENT);
    fill($("user-history"), await itemsByIds(ids));
    status.textContent = ids.length
      ? `User ${user}: newest first. Views on this page are posted as events.`
      : `User ${user} has no stored history yet. Views on this page are posted as events.`;
  } catch (error) {
    status.textContent = `History unavailable: ${error.message}`;
  }
}

let postingOff = false;

// With a user id set, a view is also an event for the stream path; when the server wants a key
// for writes, posting is off (the page never holds a key).
async function postView(itemId) {
  const user = userId();
  if (!user || postingOff) return;
  const event = {
    event_id: crypto.randomUUID(),
    user_id: user,
    item_id: itemId,
    event_type: "view",
    event_time_ms: Date.now(),
  };
  try {
    await api("POST", "/events", event);
    // Applied moments after it is accepted: look again so the history shows it.
    setTimeout(showUser, 500);
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      postingOff = true;
      $("user-status").textContent = "Views are not posted: this server wants a key for events.";
    } else {
      $("user-status").textContent = `A view was not posted: ${error.message}`;
    }
  }
}

async function showItem(itemId) {
  const view = $("item-view");
  view.hidden = false;
  $("item-title").textContent = itemId;
  $("item-details").textContent = "";
  try {
    const [item] = await itemsByIds([itemId]);
    $("item-title").textContent = item.title || itemId;
    $("item-details").textContent = describe(item);
  } catch (error) {
    $("item-details").textContent = `Item unavailable: ${error.message}`;
  }
  try {
    const similar = await api("GET", `/items/${encodeURIComponent(itemId)}/similar?count=8`);
    fill($("similar-items"), similar.recommendations.map((rec) => ({ item_id: rec.item_id, ...rec })));
  } catch (_) {
    $("similar-items").replaceChildren();
  }
}

async function route() {
  const match = location.hash.match(/^#\/item\/(.+)$/);
  if (!match) {
    $("item-view").hidden = true;
    await Promise.all([showRecent(), showRecommendations(), showUser()]);
    return;
  }
  const itemId = decodeURIComponent(match[1]);
  remember(itemId);
  await postView(itemId);
  await Promise.all([showItem(itemId), showRecent(), showRecommendations(), showUser()]);
  $("item-title").focus({ preventScroll: true });
}

document.addEventListener("DOMContentLoaded", () => {
  $("item-title").tabIndex = -1;
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-input").value.trim();
    if (query) search(query);
  });
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("user-input").value.trim();
    if (user) localStorage.setItem(USER_KEY, user);
    else localStorage.removeItem(USER_KEY);
    postingOff = false;
    showUser();
    showRecommendations();
  });
  $("user-clear").addEventListener("click", () => {
    localStorage.removeItem(USER_KEY);
    showUser();
    showRecommendations();
  });
  $("recent-clear").addEventListener("click", () => {
    localStorage.removeItem(RECENT_KEY);
    showRecent();
    showRecommendations();
  });
  window.addEventListener("hashchange", route);
  route();
});
