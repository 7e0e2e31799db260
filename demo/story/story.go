package story

// Steps is the tutorial's story on the test world, from the workload and
// its bug to the fix through a bridge and back (TutorialSteps).
func Steps(d *Demo) []Step { return TutorialSteps(d) }
