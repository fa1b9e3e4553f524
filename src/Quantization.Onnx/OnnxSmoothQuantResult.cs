namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxSmoothQuant"/> did.</summary>
/// <param name="Groups">The smoothed groups, in graph order of their first layer.</param>
/// <param name="Skipped">The groups left alone, with the reason.</param>
public sealed record OnnxSmoothQuantResult(IReadOnlyList<OnnxSmoothQuantGroup> Groups, IReadOnlyList<OnnxSkippedScaleGroup> Skipped);
