import { readFileSync } from "node:fs";

/** The Docker Engine API version ctnet speaks (what the docker 28 CLI speaks too). */
export const API_VERSION = "1.50";
export const MIN_API_VERSION = "1.24";
export const CTNET_VERSION: string = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
).version;
