namespace Quantization;

/// <summary>Runs a model, or the part of it that matters, on one calibration batch and records its activations.</summary>
/// <typeparam name="TBatch">The batch type.</typeparam>
/// <param name="batch">The batch.</param>
/// <param name="recorder">Where to record the activations.</param>
/// <param name="cancellationToken">Cancels the step.</param>
/// <returns>A task that completes when the batch is done.</returns>
public delegate ValueTask CalibrationStep<in TBatch>(TBatch batch, IActivationRecorder recorder, CancellationToken cancellationToken);
