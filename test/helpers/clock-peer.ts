/** The other side of the clock test: a process whose clock reads CLOCK_MONOTONIC + argv[2] ns. */
const offset = BigInt(process.argv[2] ?? '0');
const now = () => process.hrtime.bigint() + offset;
process.on('message', () => {
  const t1 = now();
  process.send!({ t1: String(t1), t2: String(now()) });
});
process.send!('ready');
