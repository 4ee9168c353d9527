"""Natural-language instructions for the 50 MetaWorld v3 tasks.

Each task maps to a dict with two lists:

* ``"train"``: three instructions used during training (and for the in-distribution
  evaluation splits). A policy may see any of them when conditioned on language.
* ``"heldout"``: two paraphrases that are never shown during training. They are used
  only by the ``ood-language`` evaluation split, to measure whether a policy
  generalises to unseen wordings of a familiar task.

All strings are lowercase ASCII imperative sentences (letters, digits, spaces and
``, . ' -`` only, at most 80 characters), distinct within and across tasks, so that
tasks sharing a scene (e.g. door-lock vs door-unlock, drawer-open vs drawer-close)
remain distinguishable from their instruction alone.
"""

INSTRUCTIONS: dict[str, dict[str, list[str]]] = {
    "assembly-v3": {
        "train": [
            "pick up the ring nut and place it onto the peg",
            "grab the nut by its handle and slide it down over the peg",
            "assemble the nut onto the red peg",
        ],
        "heldout": [
            "fit the round nut over the post",
            "take the ring and drop it around the vertical pin",
        ],
    },
    "basketball-v3": {
        "train": [
            "pick up the basketball and put it in the hoop",
            "dunk the ball into the basket",
            "grab the ball and drop it through the hoop",
        ],
        "heldout": [
            "score a basket with the ball",
            "lift the orange ball and place it through the ring of the net",
        ],
    },
    "bin-picking-v3": {
        "train": [
            "move the cube from the left bin into the right bin",
            "pick the block out of one bin and place it in the other bin",
            "transfer the cube to the target bin",
        ],
        "heldout": [
            "relocate the small box into the empty container",
            "take the object from its tray and drop it in the second tray",
        ],
    },
    "box-close-v3": {
        "train": [
            "put the lid on the box",
            "close the box with its cover",
            "pick up the box lid and place it on top of the box",
        ],
        "heldout": [
            "cover the container by placing the top on it",
            "grab the handle of the cap and seal the box",
        ],
    },
    "button-press-topdown-v3": {
        "train": [
            "press the button down from above",
            "push the button from the top",
            "press down on the top of the button",
        ],
        "heldout": [
            "bring the gripper down onto the button to depress it",
            "tap the upward facing button vertically",
        ],
    },
    "button-press-topdown-wall-v3": {
        "train": [
            "press the button down from above past the wall",
            "reach over the wall and push the button from the top",
            "press down on the button behind the wall",
        ],
        "heldout": [
            "go around the barrier and depress the button from overhead",
            "avoid the obstacle and push the upward facing button down",
        ],
    },
    "button-press-v3": {
        "train": [
            "press the button on the front of the box",
            "push the button forward",
            "press the side facing button horizontally",
        ],
        "heldout": [
            "poke the button straight ahead of you",
            "move forward and depress the button on the panel",
        ],
    },
    "button-press-wall-v3": {
        "train": [
            "press the front button behind the wall",
            "reach around the wall and push the button forward",
            "go past the wall and press the button horizontally",
        ],
        "heldout": [
            "avoid the barrier and poke the button on the panel",
            "get around the obstacle to depress the forward facing button",
        ],
    },
    "coffee-button-v3": {
        "train": [
            "press the button on the coffee machine",
            "push the coffee machine button",
            "start the coffee machine by pressing its button",
        ],
        "heldout": [
            "turn on the espresso maker",
            "hit the switch on the front of the coffee maker",
        ],
    },
    "coffee-pull-v3": {
        "train": [
            "pull the mug out from under the coffee machine",
            "take the cup away from the coffee machine to the goal marker",
            "slide the mug back from the coffee machine",
        ],
        "heldout": [
            "retrieve the cup from beneath the espresso maker",
            "drag the coffee mug toward you and onto the target",
        ],
    },
    "coffee-push-v3": {
        "train": [
            "push the mug under the coffee machine",
            "slide the cup forward beneath the coffee spout",
            "move the mug into the coffee machine",
        ],
        "heldout": [
            "place the cup below the espresso maker nozzle",
            "shove the coffee mug to where the coffee pours",
        ],
    },
    "dial-turn-v3": {
        "train": [
            "turn the dial",
            "rotate the dial to the goal marker",
            "spin the knob on the dial around",
        ],
        "heldout": [
            "twist the round knob",
            "give the dial a turn until it reaches the target",
        ],
    },
    "disassemble-v3": {
        "train": [
            "pick the ring nut off the peg",
            "lift the nut up and off the peg",
            "disassemble the nut from the red peg",
        ],
        "heldout": [
            "remove the round nut from the post",
            "take the ring off the vertical pin",
        ],
    },
    "door-close-v3": {
        "train": [
            "close the door",
            "push the door shut",
            "swing the open door closed",
        ],
        "heldout": [
            "shut the hinged door",
            "move the door until it is no longer open",
        ],
    },
    "door-lock-v3": {
        "train": [
            "lock the door",
            "turn the lock knob to lock the door",
            "rotate the door lock down into the locked position",
        ],
        "heldout": [
            "secure the door by twisting its latch",
            "engage the lock on the door",
        ],
    },
    "door-open-v3": {
        "train": [
            "open the door",
            "pull the door open by its handle",
            "swing the door open",
        ],
        "heldout": [
            "grab the handle and draw the door toward the target",
            "get the hinged door open",
        ],
    },
    "door-unlock-v3": {
        "train": [
            "unlock the door",
            "turn the lock knob to unlock the door",
            "rotate the door lock into the unlocked position",
        ],
        "heldout": [
            "release the latch on the door",
            "disengage the door lock by twisting it",
        ],
    },
    "hand-insert-v3": {
        "train": [
            "put the gripper into the hole",
            "insert the hand into the hole in the table",
            "reach down into the hole with the gripper",
        ],
        "heldout": [
            "lower your hand inside the opening",
            "place the end effector in the recess on the tabletop",
        ],
    },
    "drawer-close-v3": {
        "train": [
            "close the drawer",
            "push the drawer shut",
            "slide the open drawer closed",
        ],
        "heldout": [
            "shove the drawer back into the cabinet",
            "shut the sliding compartment",
        ],
    },
    "drawer-open-v3": {
        "train": [
            "open the drawer",
            "pull the drawer open by its handle",
            "slide the drawer out",
        ],
        "heldout": [
            "draw the compartment out of the cabinet",
            "grab the handle and pull out the drawer toward you",
        ],
    },
    "faucet-open-v3": {
        "train": [
            "open the faucet",
            "turn the faucet handle to open it",
            "rotate the tap handle to turn the water on",
        ],
        "heldout": [
            "turn on the tap",
            "twist the faucet lever into the open position",
        ],
    },
    "faucet-close-v3": {
        "train": [
            "close the faucet",
            "turn the faucet handle to close it",
            "rotate the tap handle to turn the water off",
        ],
        "heldout": [
            "shut off the tap",
            "twist the faucet lever into the closed position",
        ],
    },
    "hammer-v3": {
        "train": [
            "hammer the nail into the wall",
            "pick up the hammer and drive the nail in",
            "use the hammer to hit the nail",
        ],
        "heldout": [
            "grab the mallet and pound the peg flush",
            "strike the nail with the hammer until it goes in",
        ],
    },
    "handle-press-side-v3": {
        "train": [
            "press the handle down from the side",
            "push the side handle down",
            "press down on the handle approaching from the side",
        ],
        "heldout": [
            "lower the sideways facing lever",
            "from the side, push the grip down to the bottom",
        ],
    },
    "handle-press-v3": {
        "train": [
            "press the handle down",
            "push down on the handle",
            "press the front handle all the way down",
        ],
        "heldout": [
            "lower the grip by pushing on it from above",
            "depress the lever in front of you",
        ],
    },
    "handle-pull-side-v3": {
        "train": [
            "pull the handle up from the side",
            "lift the side handle up",
            "pull up on the handle approaching from the side",
        ],
        "heldout": [
            "raise the sideways facing lever",
            "from the side, hook the grip and draw it upward",
        ],
    },
    "handle-pull-v3": {
        "train": [
            "pull the handle up",
            "lift up on the handle",
            "pull the front handle all the way up",
        ],
        "heldout": [
            "raise the grip by pulling it from underneath",
            "draw the lever in front of you upward",
        ],
    },
    "lever-pull-v3": {
        "train": [
            "pull the lever",
            "rotate the lever up to the goal marker",
            "pull the lever arm up",
        ],
        "heldout": [
            "swing the lever upward",
            "lift the end of the arm until the lever is raised",
        ],
    },
    "peg-insert-side-v3": {
        "train": [
            "insert the peg into the hole from the side",
            "pick up the peg and push it sideways into the hole",
            "put the peg into the side hole of the box",
        ],
        "heldout": [
            "slot the stick horizontally into the opening",
            "grab the rod and plug it into the hole on the side",
        ],
    },
    "pick-place-wall-v3": {
        "train": [
            "pick up the puck and place it at the goal over the wall",
            "lift the puck over the wall and put it on the target",
            "move the puck past the wall to the goal marker",
        ],
        "heldout": [
            "carry the disk across the barrier and set it down on the target",
            "grab the puck, clear the obstacle and drop it at the goal",
        ],
    },
    "pick-out-of-hole-v3": {
        "train": [
            "pick the puck out of the hole",
            "lift the puck out of the hole to the goal marker",
            "take the puck out of the hole",
        ],
        "heldout": [
            "retrieve the disk from the opening in the table",
            "grab the object inside the recess and raise it up",
        ],
    },
    "reach-v3": {
        "train": [
            "reach the red goal marker",
            "move the gripper to the goal",
            "reach for the target position",
        ],
        "heldout": [
            "touch the target with your hand",
            "bring the end effector to the red marker",
        ],
    },
    "push-back-v3": {
        "train": [
            "push the puck back toward you to the goal",
            "pull the puck backward to the target",
            "move the puck back to the goal marker",
        ],
        "heldout": [
            "drag the disk closer to the robot onto the target",
            "bring the puck in toward the base until it reaches the goal",
        ],
    },
    "push-v3": {
        "train": [
            "push the puck to the green target",
            "slide the puck to the goal",
            "push the puck along the table to the goal marker",
        ],
        "heldout": [
            "nudge the disk over to the target",
            "shove the puck until it sits on the goal",
        ],
    },
    "pick-place-v3": {
        "train": [
            "pick up the puck and place it at the goal",
            "grasp the puck and put it on the goal marker",
            "pick and place the puck at the target",
        ],
        "heldout": [
            "lift the disk and set it down at the target location",
            "carry the puck through the air to the goal",
        ],
    },
    "plate-slide-v3": {
        "train": [
            "slide the plate into the goal",
            "push the plate forward into the net",
            "slide the plate straight into the target",
        ],
        "heldout": [
            "shove the dish ahead until it is inside the goal",
            "move the plate away from you into the net",
        ],
    },
    "plate-slide-side-v3": {
        "train": [
            "slide the plate sideways into the goal",
            "push the plate from the side into the net",
            "slide the plate to the side into the target",
        ],
        "heldout": [
            "shove the dish laterally until it is inside the goal",
            "move the plate across the table into the net on the side",
        ],
    },
    "plate-slide-back-v3": {
        "train": [
            "slide the plate back out of the goal",
            "pull the plate back out of the net",
            "slide the plate backward to the target",
        ],
        "heldout": [
            "draw the dish out of the goal toward you",
            "retrieve the plate from the net by dragging it back",
        ],
    },
    "plate-slide-back-side-v3": {
        "train": [
            "slide the plate sideways back out of the goal",
            "pull the plate out of the net to the side",
            "slide the plate back out sideways to the target",
        ],
        "heldout": [
            "draw the dish laterally out of the goal",
            "retrieve the plate from the net by dragging it sideways",
        ],
    },
    "peg-unplug-side-v3": {
        "train": [
            "unplug the peg from the side",
            "pull the peg out of the hole sideways",
            "remove the plugged peg from the box",
        ],
        "heldout": [
            "extract the rod horizontally from the socket",
            "grab the stick and draw it out of the opening",
        ],
    },
    "soccer-v3": {
        "train": [
            "kick the ball into the goal",
            "push the soccer ball into the net",
            "score a goal with the soccer ball",
        ],
        "heldout": [
            "roll the football into the goal box",
            "nudge the ball until it goes into the net",
        ],
    },
    "stick-push-v3": {
        "train": [
            "use the stick to push the thermos to the goal",
            "grab the stick and push the bottle with it",
            "push the thermos to the target using the stick",
        ],
        "heldout": [
            "pick up the rod and shove the flask forward with it",
            "with the stick in hand, move the container away to the goal",
        ],
    },
    "stick-pull-v3": {
        "train": [
            "use the stick to pull the thermos to the goal",
            "grab the stick and pull the bottle with it",
            "pull the thermos to the target using the stick",
        ],
        "heldout": [
            "pick up the rod, hook the flask handle and drag it over",
            "with the stick in hand, draw the container to the goal",
        ],
    },
    "push-wall-v3": {
        "train": [
            "push the puck around the wall to the goal",
            "slide the puck past the wall to the target",
            "push the puck to the goal marker behind the wall",
        ],
        "heldout": [
            "nudge the disk around the barrier onto the target",
            "avoid the obstacle while shoving the puck to the goal",
        ],
    },
    "reach-wall-v3": {
        "train": [
            "reach the goal marker behind the wall",
            "move the gripper over the wall to the goal",
            "reach around the wall to the target position",
        ],
        "heldout": [
            "touch the target on the far side of the barrier",
            "avoid the obstacle and bring your hand to the red marker",
        ],
    },
    "shelf-place-v3": {
        "train": [
            "place the block on the shelf",
            "pick up the cube and put it on the shelf",
            "put the block on the shelf at the goal marker",
        ],
        "heldout": [
            "set the small box onto the rack",
            "lift the cube and store it on the shelving unit",
        ],
    },
    "sweep-into-v3": {
        "train": [
            "sweep the puck into the hole",
            "push the puck into the hole in the table",
            "slide the block into the goal hole",
        ],
        "heldout": [
            "brush the cube into the opening",
            "get the puck to drop through the gap in the tabletop",
        ],
    },
    "sweep-v3": {
        "train": [
            "sweep the puck off the table",
            "push the puck off the edge of the table",
            "slide the block off the side of the table",
        ],
        "heldout": [
            "brush the cube over the edge",
            "clear the puck from the tabletop by pushing it off",
        ],
    },
    "window-open-v3": {
        "train": [
            "open the window",
            "slide the window open",
            "push the window handle to open the window",
        ],
        "heldout": [
            "shift the glass pane aside to let air in",
            "move the glass panel until the window is open",
        ],
    },
    "window-close-v3": {
        "train": [
            "close the window",
            "slide the window shut",
            "push the window handle to close the window",
        ],
        "heldout": [
            "shift the pane back so the opening is sealed",
            "move the glass panel until the window is closed",
        ],
    },
}
