/**
 * The state store: a flat key space of JSON records ("networks/<id>", "containers/<id>", …).
 * The engine only ever talks to this interface, so the embedded backend can later be swapped for
 * etcd (multi-host) without touching the engine's logic.
 */
export interface Store {
  get<T>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<void>;
  list<T>(prefix: string): Promise<T[]>;
  close(): Promise<void>;
}
