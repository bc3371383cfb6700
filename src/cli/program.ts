import { Command } from "commander";
import { registerCluster } from "./cluster.js";
import { registerContainers } from "./containers.js";
import { registerImages } from "./images.js";
import { registerLab } from "./lab.js";
import { registerNetwork } from "./network.js";
import { registerService } from "./service.js";
import { registerSystem } from "./system.js";

/**
 * The whole command tree. Global options go before the command (`ctnet -H HOST network ls`), as
 * with docker; that positional parsing is also what lets `run` and `exec` stop reading options
 * at the container's command.
 */
export function buildProgram(): Command {
  const program = new Command("ctnet")
    .description("Container networking engine, driven through the Docker Engine API")
    .usage("[-H HOST] COMMAND")
    .option(
      "-H, --host <HOST>",
      "daemon socket to connect to (default: $CTNET_HOST, else unix:///run/ctnet/ctnet.sock)",
    )
    .enablePositionalOptions()
    .showHelpAfterError("(see --help)")
    // Set before the commands are added so they inherit it: errors reach main's single handler.
    .exitOverride();
  registerSystem(program);
  registerNetwork(program);
  registerContainers(program);
  registerImages(program);
  registerCluster(program);
  registerService(program);
  registerLab(program);
  return program;
}
