// A foreign CNC served by node-opcua, an OPC UA implementation independent of asyncua.
// Like the controller of issue 12 it reports no execution state, moves its part counter and its
// probe results (with a result id) together once per cycle, and its values are bound to getters:
// the server samples every monitored item on that item's own timer and stamps each sample with
// the time it took it, so items changed together carry timestamps up to a sampling interval apart,
// in an order set by the timers, not by us. Prints "PORT <n>" once listening (port 0 = any free
// port); stops when its standard input closes. CYCLE_MS sets the cycle (default 1000 ms).
const { OPCUAServer } = require("node-opcua-server");
const { Variant, DataType } = require("node-opcua-variant");
const CYCLE_MS = Number(process.env.CYCLE_MS || 1000);
(async () => {
  const server = new OPCUAServer({ port: 0, hostname: "127.0.0.1", buildInfo: { productName: "foreign-cnc-node" }, alternateHostname: [] });
  await server.initialize();
  const ns = server.engine.addressSpace.registerNamespace("urn:example:foreign-cnc");
  const objects = server.engine.addressSpace.rootFolder.objects;
  const cnc = ns.addObject({ organizedBy: objects, browseName: "Cnc", nodeId: "s=Cnc" });
  const state = { count: 0, load: 0 };
  const truth = (n) => [10 + n / 1000, 25 + n / 1000, 40 - n / 1000];
  const v = (name, parent, dataType, get) => ns.addVariable({ componentOf: parent, browseName: name.split(".").pop(), nodeId: "s=Cnc." + name,
      dataType, minimumSamplingInterval: 10, value: { get } });
  v("PartCounter", cnc, "UInt32", () => new Variant({ dataType: DataType.UInt32, value: state.count }));
  v("ActiveProgram", cnc, "String", () => new Variant({ dataType: DataType.String, value: "O1001" }));
  const spindle = ns.addObject({ componentOf: cnc, browseName: "Spindle", nodeId: "s=Cnc.Spindle" });
  v("Spindle.Load", spindle, "Double", () => new Variant({ dataType: DataType.Double, value: state.load }));
  const probe = ns.addObject({ componentOf: cnc, browseName: "Probe", nodeId: "s=Cnc.Probe" });
  for (let i = 0; i < 3; i++) {
    v("Probe.Result" + (i + 1), probe, "Double", () => new Variant({ dataType: DataType.Double, value: state.count ? truth(state.count)[i] : 0 }));
  }
  v("Probe.ResultId", probe, "UInt32", () => new Variant({ dataType: DataType.UInt32, value: state.count }));
  await server.start();
  const port = server.endpoints[0].port;
  console.log("PORT " + port);
  let t = 0;
  setInterval(() => {
    t += 1;
    const phase = t % 10;  // ten ticks per cycle: load while cutting, then counter and results together
    if (phase === 0) { state.count += 1; state.load = 0; } else { state.load = 30 + state.count + phase; }
  }, CYCLE_MS / 10);
  process.stdin.on("end", async () => { await server.shutdown(0); process.exit(0); });
  process.stdin.resume();
})().catch((e) => { console.error(e); process.exit(1); });
