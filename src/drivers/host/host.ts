import { InvalidParameterError } from "../../errors.js";
import type { Driver, NetworkSpec } from "../driver.js";
import { rejectUnknownOptions } from "../options.js";

/**
 * The "host" and "null" networks: containers in them use the daemon's own namespace, or a
 * namespace with only loopback. There is nothing to make in the kernel per network or endpoint;
 * the engine handles these modes when it starts a container.
 */
export class NoOpDriver implements Driver {
  readonly scope = "local" as const;

  constructor(readonly name: "host" | "null") {}

  validate(spec: NetworkSpec): { options: Record<string, string> } {
    rejectUnknownOptions(this.name, spec.options, []);
    if (spec.internal) throw new InvalidParameterError(`the ${this.name} driver does not support --internal`);
    return { options: {} };
  }

  async createNetwork(): Promise<void> {}
  async deleteNetwork(): Promise<void> {}
  async join(): Promise<void> {
    throw new InvalidParameterError(`containers cannot be connected to a ${this.name} network`);
  }
  async leave(): Promise<void> {}
  async endpointPresent(): Promise<boolean> {
    return true;
  }
  async setDefaultRoute(): Promise<void> {}
}
