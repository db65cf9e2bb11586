/** `10.0.0.2:4000`, `[::1]:4000`: how an endpoint appears in every message. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
