import type { Command } from "commander";
import { Client } from "../client/client.js";
import { describeError } from "./errors.js";
import type { Template } from "./template.js";

/** Commander's accumulator for repeatable flags (`--subnet A --subnet B`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** A client for the daemon named by the global `-H`, else `CTNET_HOST`, else the default socket. */
export function clientOf(cmd: Command): Client {
  return new Client({ host: cmd.optsWithGlobals<{ host?: string }>().host });
}

export function print(text: string): void {
  process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

/** Inspect output: docker's JSON array indented by four spaces, or the template once per object. */
export function printItems(items: unknown[], tmpl: Template | undefined): void {
  if (!tmpl) {
    print(JSON.stringify(items, null, 4));
    return;
  }
  for (const item of items) process.stdout.write(`${tmpl.execute(item)}\n`);
}

/**
 * Runs `fn` on every name, printing each failure and going on, as docker's multi-name commands
 * do; any failure makes the exit code 1.
 */
export async function forEachName(names: string[], fn: (name: string) => Promise<void>): Promise<void> {
  for (const name of names) {
    try {
      await fn(name);
    } catch (err) {
      process.stderr.write(`${describeError(err)}\n`);
      process.exitCode = 1;
    }
  }
}
