/**
 * Azurite for integration tests: the benchmarks' starter (bench/azurite.ts), one implementation
 * for both.
 */
export { startAzurite, type AzuriteOptions, type RunningAzurite } from '../../bench/azurite.js';
