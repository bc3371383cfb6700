export type { Family } from "./address.js";
export {
  addressFamily,
  macFromIPv4,
  prefixLength,
  randomMac,
  subnetContains,
  withPrefix,
} from "./helpers.js";
export { type DefaultPool, Ipam, type IpamOptions } from "./ipam.js";
export { NoAvailableAddressError, type Pool, type PoolRequest } from "./pool.js";
