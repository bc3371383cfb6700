import { CommanderError } from "commander";
import { ApiError, DaemonConnectionError, ProgressError } from "../client/client.js";
import { TemplateError } from "./template.js";

/** Bad flags or arguments, found before any request is sent; printed without "from daemon". */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** An already-worded failure with the exit code docker would use for it (125–127 for `run`). */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = "ExitError";
  }
}

/** The one line docker would print for this error. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return `Error response from daemon: ${err.message}`;
  if (err instanceof TemplateError) return `template parsing error: ${err.message}`;
  if (
    err instanceof DaemonConnectionError ||
    err instanceof ProgressError ||
    err instanceof UsageError ||
    err instanceof ExitError
  ) {
    return err.message;
  }
  return `Error: ${err instanceof Error ? err.message : String(err)}`;
}

/** Prints `err` to stderr (unless commander already did) and returns the process exit code. */
export function reportError(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode;
  process.stderr.write(`${describeError(err)}\n`);
  return err instanceof ExitError ? err.exitCode : 1;
}
