// The pet store of DESIGN.md ("Pet store (UI-driven)") on the Nimbus SDK:
// sign up / sign in, or continue as a guest (an anonymous user, upgraded in
// place on sign-up); products read straight from the database under the
// security rules, with live stock; search through the `search` function and
// purchase through the `purchase` function; the user's orders, live.
// No framework: a few render functions over the SDK's live snapshots.
import { createClient } from "@nimbus/client";

const nimbus = createClient({ url: location.origin, storage: localStorage });

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

/** Creates an element with text and attributes; children appended in order. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function toast(message, kind = "info") {
  const note = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": `toast-${kind}`, text: message });
  $("toasts").append(note);
  setTimeout(() => note.remove(), 6000);
}

const money = new Intl.NumberFormat("en", { style: "currency", currency: "EUR" });

const state = {
  user: null,
  products: new Map(),
  /** Ids the current search matched, or null when not searching. */
  hits: null,
  buying: new Set(),
  orders: [],
  /** The auth card's mode: "welcome" (signed out) or "upgrade" (a guest creating an account). */
  authMode: "welcome",
  authOpen: false,
};

// ---- Products, live -------------------------------------------------------

nimbus
  .collection("products")
  .orderBy("name")
  .onSnapshot(
    ({ docs }) => {
      state.products = new Map(docs.map((d) => [d.id, d]));
      renderProducts();
      renderOrders();
    },
    (error) => toast(`Products are unavailable: ${error.message}`, "error"),
  );

function stockLabel(stock) {
  if (stock <= 0) return ["Sold out", "stock out"];
  if (stock <= 3) return [`Only ${stock} left`, "stock low"];
  return [`${stock} in stock`, "stock"];
}

/** One card per product, kept across renders and updated in place (so a click never lands on a card being replaced). */
const cards = new Map();

function cardFor(id) {
  let card = cards.get(id);
  if (card) return card;
  const button = el("button", { "data-testid": `buy-${id}` });
  button.addEventListener("click", () => buy(id));
  card = {
    item: el("li", { class: "product", "data-testid": `product-${id}` }),
    emoji: el("span", { class: "emoji", "aria-hidden": "true" }),
    name: el("h3"),
    description: el("p"),
    stock: el("span", { "data-testid": `stock-${id}` }),
    price: el("span", { class: "price" }),
    button,
  };
  card.item.append(card.emoji, card.name, card.description, card.stock, el("div", { class: "foot" }, card.price, button));
  cards.set(id, card);
  return card;
}

function updateCard(product) {
  const { name, emoji, price, stock = 0, description = "" } = product.data;
  const card = cardFor(product.id);
  const [label, stockClass] = stockLabel(stock);
  const buying = state.buying.has(product.id);
  card.emoji.textContent = emoji ?? "🐾";
  card.name.textContent = name;
  card.description.textContent = description;
  card.stock.textContent = label;
  card.stock.className = stockClass;
  card.price.textContent = money.format(price);
  card.button.textContent = buying ? "Buying…" : state.user ? "Buy" : "Sign in to buy";
  card.button.disabled = buying || stock <= 0;
  return card.item;
}

function renderProducts() {
  for (const id of cards.keys()) if (!state.products.has(id)) cards.delete(id);
  const shown = [...state.products.values()].filter((p) => state.hits === null || state.hits.includes(p.id)).map(updateCard);
  const list = $("products");
  const same = shown.length === list.children.length && shown.every((item, i) => list.children[i] === item);
  if (!same) list.replaceChildren(...shown);
}

// ---- Search (the `search` function) ----------------------------------------

let searchTimer = null;
let searchSeq = 0;
$("search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => search(event.target.value.trim()), 200);
});

async function search(query) {
  const seq = ++searchSeq;
  const status = $("search-status");
  if (!query) {
    state.hits = null;
    status.hidden = true;
    renderProducts();
    return;
  }
  try {
    const { hits } = await nimbus.functions.call(`/search?q=${encodeURIComponent(query)}`);
    if (seq !== searchSeq) return;
    state.hits = hits.map((h) => h.id);
    status.textContent = hits.length ? `${hits.length} found for “${query}”` : `Nothing matches “${query}”`;
    status.hidden = false;
    renderProducts();
  } catch (error) {
    toast(`Search failed: ${error.message}`, "error");
  }
}

// ---- Purchase (the `purchase` function) ------------------------------------

async function buy(productId) {
  if (!state.user) {
    openAuth("welcome");
    return;
  }
  const product = state.products.get(productId);
  state.buying.add(productId);
  renderProducts();
  try {
    await nimbus.functions.call("/purchase", { productId, quantity: 1 });
    toast(`Bought: ${product?.data.name ?? productId}. Thank you!`, "success");
  } catch (error) {
    toast(error.message, "error");
  } finally {
    state.buying.delete(productId);
    renderProducts();
  }
}

// ---- My orders, live --------------------------------------------------------

let stopOrders = null;

function followOrders(user) {
  stopOrders?.();
  stopOrders = null;
  state.orders = [];
  if (!user) return renderOrders();
  stopOrders = nimbus
    .collection("orders")
    .where("owner", "==", user.id)
    .orderBy("createdAt", "desc")
    .onSnapshot(
      ({ docs }) => {
        state.orders = docs;
        renderOrders();
      },
      (error) => toast(`Orders are unavailable: ${error.message}`, "error"),
    );
}

function renderOrders() {
  $("orders-section").hidden = !state.user;
  $("no-orders").hidden = state.orders.length > 0;
  const when = (order) => order.data.createdAt?.toDate().toLocaleString() ?? "";
  $("orders").replaceChildren(
    ...state.orders.map((order) => {
      const name = state.products.get(order.data.productId)?.data.name ?? order.data.productId;
      return el(
        "li",
        { "data-testid": "order" },
        el("span", { text: `${order.data.quantity} × ${name}` }),
        el("span", { class: "status", text: `${order.data.status} · ${when(order)}` }),
      );
    }),
  );
}

// ---- Auth ----------------------------------------------------------------------

function openAuth(mode) {
  state.authMode = mode;
  state.authOpen = true;
  renderAuth();
  $("auth-form").elements.email.focus();
}

function renderAuth() {
  const user = state.user;
  const upgrading = state.authMode === "upgrade" && user?.anonymous;
  $("auth").hidden = !(state.authOpen || !user);
  $("auth-title").textContent = upgrading ? "Keep your orders" : "Welcome";
  $("auth-hint").textContent = upgrading
    ? "Create an account: your guest orders stay with it."
    : "Sign in to buy — or just look around.";
  $("sign-in").hidden = Boolean(upgrading);
  $("guest").hidden = Boolean(user);
  $("auth-cancel").hidden = !user;
  $("who").hidden = !user;
  $("who-name").textContent = user ? (user.anonymous ? "Guest" : user.email) : "";
  $("upgrade").hidden = !user?.anonymous;
}

$("auth-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const action = event.submitter?.value ?? "sign-in";
  const credentials = { email: form.elements.email.value.trim(), password: form.elements.password.value };
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (action === "sign-up" && state.user?.anonymous) {
      await nimbus.auth.linkWithPassword(credentials);
      toast("Account created: your orders are kept.", "success");
    } else if (action === "sign-up") {
      await nimbus.auth.signUp(credentials);
      toast("Welcome to the pet store!", "success");
    } else {
      await nimbus.auth.signIn(credentials);
    }
    form.reset();
    state.authOpen = false;
    renderAuth();
  } catch (error) {
    toast(error.code === "unauthenticated" ? "Wrong email or password." : error.message, "error");
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
});

$("guest").addEventListener("click", async () => {
  try {
    await nimbus.auth.signInAnonymously();
    state.authOpen = false;
    renderAuth();
  } catch (error) {
    toast(error.message, "error");
  }
});
$("upgrade").addEventListener("click", () => openAuth("upgrade"));
$("auth-cancel").addEventListener("click", () => {
  state.authOpen = false;
  renderAuth();
});
$("sign-out").addEventListener("click", () => nimbus.auth.signOut().catch((error) => toast(error.message, "error")));

let followedUser = undefined;
nimbus.auth.onAuthStateChanged((user) => {
  state.user = user;
  if (user?.id !== followedUser) {
    followedUser = user?.id;
    followOrders(user);
  }
  renderAuth();
  renderProducts();
  renderOrders();
});
