namespace Quantization;

/// <summary>Progress of an <see cref="RtnQuantizer"/> run.</summary>
/// <param name="Done">Tensors handled so far.</param>
/// <param name="Name">The tensor just handled.</param>
public readonly record struct RtnProgress(int Done, string Name);
