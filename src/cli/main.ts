#!/usr/bin/env node
// The `postcopy` executable (package.json "bin"). Everything but the process is in run.ts.
import { main } from './run.js';

// A reader that goes away (`postcopy probe | head`) is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const io = {
  out: (text: string) => void process.stdout.write(text),
  err: (text: string) => void process.stderr.write(text),
};

// exitCode, not exit(): let stdout drain (a large --json report through a pipe).
process.exitCode = await main(process.argv.slice(2), io);
