"""Documents written into the build folder from what the stages recorded: the model card, the
manifest (llmbuild/report/document.py). The license report is written by llmbuild/licenses."""
