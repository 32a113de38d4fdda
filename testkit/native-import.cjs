// A real ES module import, outside the test runner's module graph: the Functions test host loads
// the app as the Node.js worker does (`import()` of each file), so the app and @azure/functions
// run as native modules. Loaded with Node's own require (module.createRequire).
module.exports = (specifier) => import(specifier);
