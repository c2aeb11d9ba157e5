pub struct ControllerConfig;
