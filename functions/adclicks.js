// The ad-clicks pipeline (see DESIGN.md: "Ad clicks (message-driven)"): a click
// is answered at once with a redirect and published as a message; a consumer
// charges the advertiser's budget asynchronously, at least once per message,
// and exactly once per click id thanks to the `charges/{message id}` document
// it creates in the same batch.
import { onHttp, onMessage, HttpsError } from "nimbus:functions";

// GET /fn/click/:adId → 302 to the ad's target.
export const click = onHttp({ method: "GET", path: "/click/:adId" }, async (req, ctx) => {
  const ad = await ctx.db.doc(`ads/${req.params.adId}`).get();
  if (!ad) throw new HttpsError("not-found", `no ad ${req.params.adId}`);
  await ctx.publish("clicks", { adId: ad.id, at: Date.now() });
  return { status: 302, headers: { location: ad.data.target } };
});

export const chargeClick = onMessage("clicks", async (message, ctx) => {
  const ad = await ctx.db.doc(`ads/${message.data.adId}`).get();
  if (!ad) return;
  const cost = ad.data.costPerClick ?? 1;
  try {
    await ctx.db
      .batch()
      .create(`charges/${message.id}`, { adId: ad.id, cost })
      .update(`ads/${ad.id}`, { budget: { $increment: -cost }, clicks: { $increment: 1 } })
      .commit();
  } catch (error) {
    if (error.code === "already-exists") return; // redelivered: this click is already charged
    throw error;
  }
});
