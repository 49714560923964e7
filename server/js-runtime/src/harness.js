// Installed in every runtime after the function module loaded: discovery of
// descriptors and one entry point per invocation, with console output captured.
(() => {
  const format = (args) => args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  let logs = [];
  const log = (level) => (...args) => logs.push({ level, message: format(args) });
  globalThis.console = { log: log("info"), info: log("info"), debug: log("debug"), warn: log("warn"), error: log("error") };
  globalThis.__nimbus_describe = () =>
    JSON.stringify(
      Object.entries(globalThis.__nimbus_exports)
        .filter(([, v]) => v && typeof v === "object" && typeof v.__nimbus === "string")
        .map(([name, v]) => ({ name, kind: v.__nimbus, spec: v.spec ?? {} })),
    );
  globalThis.__nimbus_invoke = async (name, input, ctx) => {
    logs = [];
    try {
      const descriptor = globalThis.__nimbus_exports[name];
      const result = await descriptor.handler(input, ctx);
      return JSON.stringify({ ok: result === undefined ? null : result, logs });
    } catch (e) {
      const error = { name: e?.name ?? "Error", code: e?.code ?? null, message: String(e?.message ?? e) };
      return JSON.stringify({ error, logs });
    }
  };
})();
