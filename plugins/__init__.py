"""The standard plugins, registered through the entry-point group "ablate" like any other."""
