namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxAwq"/> did.</summary>
/// <param name="Groups">The scaled groups, in graph order of their first layer.</param>
/// <param name="Skipped">The groups left alone (neither scaled nor clipped), with the reason.</param>
public sealed record OnnxAwqResult(IReadOnlyList<OnnxAwqGroup> Groups, IReadOnlyList<OnnxSkippedScaleGroup> Skipped);
