namespace Quantization;

/// <summary>One pair of quantization parameters: <c>real = (q - ZeroPoint) * Scale</c>.</summary>
/// <param name="Scale">The step between two consecutive quantized values, in real units.</param>
/// <param name="ZeroPoint">The quantized value that represents real zero.</param>
public readonly record struct ScaleAndZeroPoint(float Scale, int ZeroPoint);
