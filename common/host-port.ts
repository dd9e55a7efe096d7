export interface HostPort {
  host: string;
  port: number;
}

/** Parses "HOST:PORT", ":PORT" or "[::1]:PORT"; `flag` names the option in errors. */
export function parseHostPort(text: string, flag: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`${flag}: "${text}" is not HOST:PORT (for example 127.0.0.1:8080)`);
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
}
