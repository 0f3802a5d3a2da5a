"""Force feedback at the surgeon console: config, passivity controller, feedback core, devices, test loop."""
