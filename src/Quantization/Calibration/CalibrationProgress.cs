namespace Quantization;

/// <summary>Progress of a calibration run.</summary>
/// <param name="Batches">Batches done so far in this run.</param>
/// <param name="Total">The number of batches, when the source knows it.</param>
public readonly record struct CalibrationProgress(int Batches, int? Total);
