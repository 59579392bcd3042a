"""The audit's areas: one module per best-practice area, each a list of `@check` functions.

Only area modules live here (`audit.framework.load_areas` imports every module of this
package); shared helpers live one level up, in `sbtc_ops.audit`.
"""
