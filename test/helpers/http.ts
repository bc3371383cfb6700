/** One Docker API call over a daemon's unix socket, for test helpers and benchmarks. */
import { request } from "node:http";

export interface ApiResponse {
  status: number;
  body: unknown;
  text: string;
}

/** The body is parsed as JSON when it is JSON, else kept as text. */
export function apiRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        // A pooled connection would outlive a restarted daemon and fail the next call.
        agent: false,
        method,
        path,
        headers: data ? { "Content-Type": "application/json" } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text });
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}
