// The pet store's server-side logic (see DESIGN.md: "Pet store (UI-driven)").
// The web app reads products directly under the security rules; searching and
// purchasing go through these HTTP functions.
import { onCreate, onHttp, HttpsError } from "nimbus:functions";

// GET /fn/search?q=cat — products whose name contains q (case-insensitive).
export const search = onHttp({ method: "GET", path: "/search" }, async (req, ctx) => {
  const needle = String(req.query.q ?? "").trim().toLowerCase();
  const { documents } = await ctx.db.collection("products").orderBy("name").limit(1000).get();
  const hits = documents
    .filter((p) => typeof p.data.name === "string" && p.data.name.toLowerCase().includes(needle))
    .map((p) => ({ id: p.id, name: p.data.name, price: p.data.price, stock: p.data.stock }));
  return { hits };
});

// POST /fn/purchase {productId, quantity} — checks stock and places the order
// in one batch, conditional on the product's version, so two buyers of the
// last item cannot both succeed. A buyer who lost such a race reads the
// product again and tries once more while there is stock; when there is none
// left, the refusal says so plainly.
const ATTEMPTS = 5;

export const purchase = onHttp(
  {
    method: "POST",
    path: "/purchase",
    auth: "required",
    body: {
      type: "object",
      required: ["productId", "quantity"],
      additionalProperties: false,
      properties: {
        productId: { type: "string", minLength: 1 },
        quantity: { type: "integer", minimum: 1, maximum: 10 },
      },
    },
  },
  async (req, ctx) => {
    const { productId, quantity } = req.body;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const product = await ctx.db.doc(`products/${productId}`).get();
      if (!product) throw new HttpsError("not-found", `no product ${productId}`);
      const name = product.data.name ?? productId;
      const stock = product.data.stock ?? 0;
      if (stock < quantity) {
        const lost = attempt > 0 ? ": someone else just bought the last one" : "";
        throw new HttpsError("failed-precondition", stock === 0 ? `${name} is sold out${lost}` : `only ${stock} left of ${name}`);
      }
      const orderId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
      try {
        await ctx.db
          .batch()
          .update(`products/${productId}`, { stock: stock - quantity }, { version: product.version })
          .create(`orders/${orderId}`, {
            owner: ctx.auth.uid,
            productId,
            quantity,
            status: "placed",
            createdAt: { $serverTimestamp: true },
          })
          .commit();
      } catch (error) {
        if (error.code === "failed-precondition") continue; // another purchase changed the product first
        throw error;
      }
      return { status: 201, body: { orderId, remaining: stock - quantity } };
    }
    throw new HttpsError("resource-exhausted", `too many people are buying ${productId} right now; try again`);
  },
);

// Every new order gets a confirmation record (a durable trigger: it runs even if
// the server stops right after the order was written).
export const confirmOrder = onCreate("orders/{orderId}", async (event, ctx) => {
  ctx.log("confirming", event.params.orderId);
  await ctx.db.doc(`confirmations/${event.params.orderId}`).set({
    orderId: event.params.orderId,
    owner: event.after.owner,
    productId: event.after.productId,
    quantity: event.after.quantity,
    confirmedAt: { $serverTimestamp: true },
  });
});
