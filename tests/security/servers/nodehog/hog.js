// Report the heap cap, then grow the JS heap until V8 gives up.
const v8 = require("v8");
process.stderr.write(`heap limit ${Math.round(v8.getHeapStatistics().heap_size_limit / 1048576)} MiB\n`);
const hoard = [];
setInterval(() => {
  for (let i = 0; i < 64; i++) hoard.push(new Array(16384).fill(i + hoard.length));
}, 1);
