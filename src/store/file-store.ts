import { mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { TMP_SUFFIX, writeFileAtomic } from "../atomic-file.js";
import { InvalidParameterError, SystemError } from "../errors.js";
import type { Store } from "./store.js";

const KEY = /^[a-z]+\/[A-Za-z0-9_.-]+$/;

/**
 * Embedded store: one JSON file per record under `root`, written to a temporary file, flushed to
 * disk and renamed over the old one. rename(2) is atomic, so a write interrupted at any point
 * (SIGKILL, power loss) leaves either the old record or the new one, never a torn file; leftover
 * temporary files are discarded at open. All records are read into memory at open, so reads
 * never touch the disk.
 */
export class FileStore implements Store {
  private readonly cache = new Map<string, unknown>();

  private constructor(private readonly root: string) {}

  static open(root: string): FileStore {
    const store = new FileStore(root);
    mkdirSync(root, { recursive: true, mode: 0o700 });
    for (const kind of readdirSync(root, { withFileTypes: true })) {
      if (!kind.isDirectory()) continue;
      const dir = join(root, kind.name);
      for (const file of readdirSync(dir)) {
        const path = join(dir, file);
        if (file.endsWith(TMP_SUFFIX)) {
          rmSync(path, { force: true });
          continue;
        }
        if (!file.endsWith(".json")) continue;
        const key = `${kind.name}/${file.slice(0, -".json".length)}`;
        try {
          store.cache.set(key, JSON.parse(readFileSync(path, "utf8")));
        } catch (err) {
          throw new SystemError(`store record ${path} is unreadable: ${(err as Error).message}`);
        }
      }
    }
    return store;
  }

  private path(key: string): string {
    if (!KEY.test(key)) throw new InvalidParameterError(`invalid store key: ${key}`);
    return join(this.root, `${key}.json`);
  }

  async get<T>(key: string): Promise<T | undefined> {
    return structuredClone(this.cache.get(key)) as T | undefined;
  }

  async put<T>(key: string, value: T): Promise<void> {
    const path = this.path(key);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileAtomic(path, JSON.stringify(value));
    this.cache.set(key, structuredClone(value));
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    this.cache.delete(key);
  }

  async list<T>(prefix: string): Promise<T[]> {
    const out: T[] = [];
    for (const [key, value] of this.cache) if (key.startsWith(prefix)) out.push(structuredClone(value) as T);
    return out;
  }

  async close(): Promise<void> {}
}
