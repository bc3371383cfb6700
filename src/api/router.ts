import type { IncomingMessage, ServerResponse } from "node:http";
import { InvalidParameterError } from "../errors.js";

export interface ApiRequest {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  raw: IncomingMessage;
  /** the parsed JSON body ({} when empty) */
  body(): Promise<unknown>;
}

export type Handler = (req: ApiRequest, res: ServerResponse) => Promise<void> | void;

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

/** Docker clients may put an API version before any path: /v1.50/networks is /networks. */
const VERSION_PREFIX = /^\/v\d+(\.\d+)?(?=\/)/;
const MAX_BODY = 4 * 1024 * 1024;

/** A small path router: `/networks/:id/connect` style patterns, exact method match. */
export class Router {
  private readonly routes: Route[] = [];

  on(method: string, path: string, handler: Handler): this {
    const keys: string[] = [];
    const source = path.replace(/:([a-zA-Z]+)/g, (_, key: string) => {
      keys.push(key);
      return "([^/]+)";
    });
    this.routes.push({ method, pattern: new RegExp(`^${source}/?$`), keys, handler });
    return this;
  }

  /** Finds the handler; `allowed` lists the methods of a path that exists under another method. */
  match(
    method: string,
    url: string,
  ): { handler?: Handler; request?: Omit<ApiRequest, "raw" | "body">; allowed: string[] } {
    const parsed = new URL(url, "http://ctnet");
    const path = parsed.pathname.replace(VERSION_PREFIX, "");
    const allowed: string[] = [];
    for (const r of this.routes) {
      const m = r.pattern.exec(path);
      if (!m) continue;
      if (r.method !== method && !(method === "HEAD" && r.method === "GET")) {
        allowed.push(r.method);
        continue;
      }
      const params: Record<string, string> = {};
      r.keys.forEach((k, i) => {
        params[k] = decodeURIComponent(m[i + 1] ?? "");
      });
      return { handler: r.handler, request: { method, path, params, query: parsed.searchParams }, allowed };
    }
    return { allowed };
  }
}

export function readJsonBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new InvalidParameterError("request body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8").trim();
      if (!text) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new InvalidParameterError("invalid JSON in request body"));
      }
    });
    req.on("error", reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

export function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status);
  res.end();
}

/** Docker's boolean query parameters: 1/true/True are true; absent, 0 and false are false. */
export function queryBool(q: URLSearchParams, key: string): boolean {
  const v = q.get(key);
  return v !== null && v !== "" && v !== "0" && v.toLowerCase() !== "false";
}
