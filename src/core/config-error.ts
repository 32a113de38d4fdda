/** A setting or configuration that cannot be used: refused whole at start-up, every problem listed by path. */
export interface ConfigProblem {
  /** JSON path of the offending value, e.g. `accessPolicies[2].objectId`; `$` for the whole. */
  readonly path: string;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly code = 'invalid_config' as const;
  constructor(
    readonly problems: readonly ConfigProblem[],
    readonly source = 'configuration',
  ) {
    super(`${source} is invalid:\n${problems.map((p) => `  - ${p.path}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}
