"""fedrot's bandwidth-versus-accuracy simulations: a Flower app plus a sweep runner."""
