export * from './errors.js';
export * from './frame.js';
export * from './frame-decoder.js';
export * from './channel.js';
export * from './listener.js';
export { formatHostPort } from './host-port.js';
export * from './security.js';
export { tlsFailureReason } from './tls-failure.js';
