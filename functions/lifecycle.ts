import { app } from '@azure/functions';
import { startWorker, stopWorker } from '../src/http/azure.js';

// Start-up, not the first request: the worker awaits appStart hooks before the host sends any
// invocation, so keys and the snapshot are loaded when the first decision arrives, and a bad
// configuration fails the worker's start-up (logged with every problem) instead of each request.
app.hook.appStart(() => startWorker());
app.hook.appTerminate(() => stopWorker());
