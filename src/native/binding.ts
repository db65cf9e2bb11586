import { createRequire } from 'node:module';
import { UnsupportedError } from '../errors.js';
import { SystemError } from './errors.js';
import type { Native } from './native.js';

/**
 * Loads the addon once per thread (each worker thread gets its own instance) and hands it
 * the error class it throws. This is the only module that touches the raw binding.
 */
function load(): Native {
  const require = createRequire(import.meta.url);
  // dist/src/native/binding.js -> <package root>/build/Release
  const path = new URL('../../../build/Release/postcopy_native.node', import.meta.url).pathname;
  let addon: Native;
  try {
    addon = require(path) as Native;
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new UnsupportedError(
      `postcopy's native addon is not built (${reason})`,
      'Run `npm install` in the package directory; it builds the addon with node-gyp (needs g++, make and python3)',
    );
  }
  addon.setErrorClass(SystemError);
  return addon;
}

export const native: Native = load();
