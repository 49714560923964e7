// The "nimbus:functions" module: helpers that describe a function's trigger.
// Each returns a descriptor the host discovers among a module's exports.
export class HttpsError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "HttpsError";
    this.code = code;
  }
}
const describe = (kind, spec, handler) => {
  if (typeof handler !== "function") throw new TypeError(`${kind}: the last argument must be a function`);
  return { __nimbus: kind, spec, handler };
};
export const onHttp = (spec, handler) => describe("http", spec, handler);
export const onCreate = (path, handler) => describe("create", { path }, handler);
export const onUpdate = (path, handler) => describe("update", { path }, handler);
export const onDelete = (path, handler) => describe("delete", { path }, handler);
export const onWrite = (path, handler) => describe("write", { path }, handler);
export const onMessage = (topic, handler) => describe("message", { topic }, handler);
export const onSchedule = (cron, handler) => describe("schedule", { cron }, handler);
export const beforeSignUp = (handler) => describe("beforeSignUp", {}, handler);
export const afterSignUp = (handler) => describe("afterSignUp", {}, handler);
