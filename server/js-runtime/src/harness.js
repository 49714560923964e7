// Installed in every runtime before any user code runs. It keeps private
// references to the one host op and the timers, then removes `Deno` from the
// global scope, so a function reaches no other deno_core op (`op_panic`,
// `op_print`, …). It defines the captured console and setTimeout/setInterval,
// and its value is `{ adopt, describe, invoke }`: the host keeps these functions
// and calls them directly (no script is compiled per call), and user code
// cannot reach them.
(() => {
  const core = globalThis.Deno.core;
  const hostOp = core.ops.op_nimbus_host;
  const createTimer = core.createTimer;
  const cancelTimer = core.cancelTimer;
  delete globalThis.Deno;
  delete globalThis.__bootstrap;
  const timers = new Map();
  let nextTimer = 1;
  const schedule = (repeat) => (callback, delay = 0, ...args) => {
    if (typeof callback !== "function") throw new TypeError("the callback must be a function");
    const id = nextTimer++;
    const run = () => {
      if (!repeat) timers.delete(id);
      callback(...args);
    };
    timers.set(id, createTimer(run, Number(delay) || 0, undefined, repeat, true, false));
    return id;
  };
  const clear = (id) => {
    const timer = timers.get(id);
    if (timer !== undefined) {
      timers.delete(id);
      cancelTimer(timer);
    }
  };
  const hidden = (name, value) => Object.defineProperty(globalThis, name, { value, writable: false, enumerable: false, configurable: false });
  hidden("setTimeout", schedule(false));
  hidden("setInterval", schedule(true));
  hidden("clearTimeout", clear);
  hidden("clearInterval", clear);
  const format = (args) => args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  let logs = [];
  const log = (level) => (...args) => logs.push({ level, message: format(args) });
  globalThis.console = { log: log("info"), info: log("info"), debug: log("debug"), warn: log("warn"), error: log("error") };
  // The module's exports, handed over by the host once the module has loaded.
  let exports = null;
  const adopt = (namespace) => { exports = namespace; };
  const describe = () =>
    JSON.stringify(
      Object.entries(exports ?? {})
        .filter(([, v]) => v && typeof v === "object" && typeof v.__nimbus === "string")
        .map(([name, v]) => ({ name, kind: v.__nimbus, spec: v.spec ?? {} })),
    );
  const host = async (request) => {
    const reply = JSON.parse(await hostOp(JSON.stringify(request)));
    if (reply.error) {
      const error = new Error(reply.error.message);
      error.name = "HttpsError";
      error.code = reply.error.code;
      throw error;
    }
    return reply.ok;
  };
  const doc = (path) => ({
    path,
    get: () => host({ op: "get", path }),
    set: (data, options = {}) => host({ op: "set", path, data, ...options }),
    create: (data) => host({ op: "create", path, data }),
    update: (data, options = {}) => host({ op: "update", path, data, ...options }),
    delete: (options = {}) => host({ op: "delete", path, ...options }),
  });
  const queryOf = (scope) => {
    const query = { ...scope, where: [], orderBy: [] };
    const builder = {
      where: (field, op, value) => { query.where.push([field, op, value]); return builder; },
      orderBy: (field, direction = "asc") => { query.orderBy.push([field, direction]); return builder; },
      limit: (n) => { query.limit = n; return builder; },
      startAfter: (cursor) => { query.startAfter = cursor; return builder; },
      get: () => host({ op: "query", query }),
    };
    return builder;
  };
  const collection = (path) => ({
    ...queryOf({ collection: path }),
    doc: (id) => doc(`${path}/${id}`),
    add: (data) => host({ op: "add", collection: path, data }),
  });
  const collectionGroup = (id) => queryOf({ collectionGroup: id });
  const batch = () => {
    const writes = [];
    const add = (op) => (path, data, precondition) => {
      writes.push({ op, path, ...(data === undefined ? {} : { data }), ...(precondition ? { precondition } : {}) });
      return b;
    };
    const b = {
      set: add("set"),
      create: add("create"),
      update: add("update"),
      delete: (path, precondition) => add("delete")(path, undefined, precondition),
      commit: () => host({ op: "batch", writes }),
    };
    return b;
  };
  const db = { doc, collection, collectionGroup, batch };
  // fetch() to the hosts allowed in configuration; the host makes the request.
  globalThis.fetch = async (url, init = {}) => {
    const reply = await host({
      op: "fetch", url: String(url), method: init.method ?? "GET",
      headers: init.headers ?? {}, body: init.body === undefined ? null : String(init.body),
    });
    return {
      status: reply.status, ok: reply.status >= 200 && reply.status < 300, headers: reply.headers,
      text: async () => reply.body, json: async () => JSON.parse(reply.body),
    };
  };
  // One call: `name`'s handler with the input and context given as JSON text.
  // The reply is JSON text, returned at once when the handler returns a value
  // and as a promise when it returns one.
  const invoke = (name, inputText, contextText) => {
    logs = [];
    const ok = (result) => JSON.stringify({ ok: result === undefined ? null : result, logs });
    const failed = (e) => {
      const error = { name: e?.name ?? "Error", code: e?.code ?? null, message: String(e?.message ?? e) };
      return JSON.stringify({ error, logs });
    };
    const settle = (result) => {
      try {
        return ok(result);
      } catch (e) {
        return failed(e);
      }
    };
    try {
      const ctx = JSON.parse(contextText);
      const context = { ...(ctx ?? {}), db, publish: (topic, data) => host({ op: "publish", topic, data }), log: globalThis.console.log };
      const result = exports[name].handler(JSON.parse(inputText), context);
      return typeof result?.then === "function" ? Promise.resolve(result).then(settle, failed) : settle(result);
    } catch (e) {
      return failed(e);
    }
  };
  return { adopt, describe, invoke };
})();
